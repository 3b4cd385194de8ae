"""Hostile HTTP bodies: header injection through every JSON field that becomes a header, a
body far over the limit, JSON nested without end, bytes that are not UTF-8. Each is a 4xx
that names what is wrong, never a 5xx, never a message."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from sendguard.ingress.payloads import SendPayload
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

SEND: dict[str, Any] = {
    "from": "shop@example.com",
    "to": ["ann@example.org"],
    "subject": "s",
    "text": "t",
}
INJECTED = "Bcc: evil@example.org"
BREAKS = ["\r\n", "\n", "\r"]

# Every field of the send payload that ends up in a header (text and html are the body,
# where line breaks belong), with a valid value to append the injection to.
HEADER_FIELDS: dict[str, Any] = {
    "from": "shop@example.com",
    "to": ["ann@example.org"],
    "cc": ["cc@example.org"],
    "bcc": ["bcc@example.org"],
    "subject": "Hello",
    "campaign": "spring",
    "class": "marketing",
    "requires": ["meeting:1:status=completed"],
    "unless": ["meeting:1:status=no_show"],
    "wait": "1h",
    "data_as_of": "2026-01-01T00:00:00Z",
    "not_before": "2026-01-01T00:00:00Z",
    "timezone": "Europe/Berlin",
    "offer": "spring-sale",
    "on_timeout": "hold",
}


def injected(value: Any, line_break: str) -> Any:
    if isinstance(value, list):
        return [value[0] + line_break + INJECTED]
    return value + line_break + INJECTED


def test_the_field_list_covers_the_payload() -> None:
    names = {f.alias or n for n, f in SendPayload.model_fields.items()}
    assert names - {"text", "html", "headers"} == set(HEADER_FIELDS)


def test_crlf_in_every_header_bearing_field_is_400_naming_it(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    wrong = []
    cases: list[tuple[str, dict[str, Any]]] = []
    for name, value in HEADER_FIELDS.items():
        for line_break in BREAKS:
            cases.append((name, {**SEND, name: injected(value, line_break)}))
    for line_break in BREAKS:
        cases.append(("headers", {**SEND, "headers": {"X-Note": "a" + line_break + INJECTED}}))
        cases.append(("headers", {**SEND, "headers": {"X-Note" + line_break + INJECTED: "a"}}))
        cases.append(("headers", {**SEND, "headers": {"X-Note:" + INJECTED: "a"}}))
    for name, body in cases:
        status, answer = proc.call("POST", "/v1/messages", body)
        field = answer.get("error", {}).get("field", "") if isinstance(answer, dict) else ""
        if status != 400 or not field.startswith(name):
            wrong.append((name, json.dumps(body[name])[:60], status, answer))
    assert wrong == []
    assert proc.states() == {}


def test_crlf_in_esp_compatible_sends_is_refused(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sendgrid = {
        "personalizations": [{"to": [{"email": "ann@example.org"}]}],
        "from": {"email": "shop@example.com"},
        "content": [{"type": "text/plain", "value": "t"}],
    }
    postmark = {"From": "shop@example.com", "To": "ann@example.org", "TextBody": "t"}
    wrong = []
    for line_break in BREAKS:
        bad = "Hello" + line_break + INJECTED
        for path, body, headers in (
            ("/v3/mail/send", {**sendgrid, "subject": bad}, auth),
            ("/v3/mail/send", {**sendgrid, "subject": "s", "headers": {"X-Note": bad}}, auth),
            ("/email", {**postmark, "Subject": bad}, {"X-Postmark-Server-Token": TOKEN}),
            (
                "/email",
                {**postmark, "Subject": "s", "Headers": [{"Name": "X-Note", "Value": bad}]},
                {"X-Postmark-Server-Token": TOKEN},
            ),
        ):
            status, answer = proc.call("POST", path, body, token=None, headers=headers)
            if not 400 <= status < 500:
                wrong.append((path, status, answer))
    assert wrong == []
    assert proc.states() == {}


def raw_request(port: int, head: str, body_part: bytes, timeout: float = 20.0) -> bytes:
    """Send the head and only part of the body; return what the server answers meanwhile."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + body_part)
        answer = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


OVERSIZED = [
    ("/v1/messages", "application/json"),
    ("/v1/messages?to=ann@example.org", "message/rfc822"),
    ("/v1/events", "application/json"),
    ("/v3/mail/send", "application/json"),
]


def test_a_50_mb_body_is_413_before_it_is_read(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    for path, content_type in OVERSIZED:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
        )
        # One megabyte of the fifty: the answer must come without the rest.
        answer = raw_request(proc.http_port, head, b"x" * (1024 * 1024))
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:300])
        assert b"max_body_size" in answer
    assert proc.states() == {}


def test_deeply_nested_json_is_400(sendguard: Start) -> None:
    proc = sendguard()
    wrong = []
    for depth in (1_000, 100_000):
        for path in ("/v1/messages", "/v1/events", "/v1/facts", "/v1/suppressions"):
            for raw in (
                b"[" * depth + b"]" * depth,
                b'{"headers": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
            ):
                status, answer = proc.call(
                    "POST", path, raw=raw, headers={"Content-Type": "application/json"}
                )
                if status != 400:
                    wrong.append((depth, path, status, str(answer)[:200]))
    assert wrong == []
    assert proc.states() == {}


def test_invalid_utf8_is_400(sendguard: Start) -> None:
    proc = sendguard()
    wrong = []
    bodies = {
        "/v1/messages": b'{"from": "shop@example.com", "to": ["a@example.org"], "subject": "\xff"}',
        "/v1/events": b'{"type": "open", "recipient": "a\xc3@example.org"}',
        "/v1/facts": b'{"key": "k\xed\xa0\x80", "value": "v"}',
        "/v1/suppressions": b'{"address": "\x80@example.org"}',
        "/v3/mail/send": b'{"subject": "\xc0\xaf"}',
    }
    for path, raw in bodies.items():
        status, answer = proc.call(
            "POST", path, raw=raw, headers={"Content-Type": "application/json"}
        )
        if status != 400:
            wrong.append((path, status, str(answer)[:200]))
    assert wrong == []
    assert proc.states() == {}
