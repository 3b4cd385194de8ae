"""Logs end to end: with `log.format: json` every line a real `sendguard serve` writes is one
JSON object, its own lines and those of aiosmtpd and aiohttp alike, and exceptions carry their
traceback in a field instead of spilling it as plain text."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
Event = dict[str, Any]


def client_hello() -> bytes:
    """The first bytes a TLS client sends: what an implicit-TLS client says to a plain port."""
    tls = ssl.create_default_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a TLS handshake record
    return hello


def talk(port: int, data: bytes, *, banner: bool) -> bytes:
    """Send raw bytes to a listener and return what it answers before closing or going quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if banner:
            sock.recv(1024)
        sock.sendall(data)
        answer = b""
        with contextlib.suppress(TimeoutError):
            sock.settimeout(2)
            while chunk := sock.recv(4096):
                answer += chunk
        return answer


def wait_for(proc: SendguardProcess, match: Callable[[Event], bool], what: str) -> Event:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for event in proc.log_events():
            if match(event):
                return event
        time.sleep(0.05)
    raise AssertionError(f"no log line {what}:\n{proc.log()[-4000:]}")


def test_every_line_is_json_and_tracebacks_are_fields(sendguard: Start) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}, {"plugin": "raise", "on_error": "forward"}])
    # aiosmtpd: an implicit-TLS client on the plain SMTP port.
    answer = talk(proc.smtp_port, client_hello() + b"\r\n", banner=True)
    assert answer.startswith(b"500"), answer
    # aiohttp: a request line that is not HTTP.
    answer = talk(
        proc.http_port, b"GET /healthz HTTP/1.1 nonsense\r\nHost: x\r\n\r\n", banner=False
    )
    assert b" 400 Bad Request" in answer.split(b"\r\n", 1)[0], answer
    # a third-party policy that raises: the delivery goes on (on_error: forward), the log says why.
    msg_id = send(proc, ["ann@example.org"], message())
    proc.wait_states({"ann@example.org": "sent"}, msg_id)

    smtp_line = wait_for(proc, lambda e: e.get("logger") == "mail.log", "from aiosmtpd")
    assert "unrecognised" in smtp_line["event"]
    http_line = wait_for(proc, lambda e: str(e.get("logger")).startswith("aiohttp"), "from aiohttp")
    assert http_line["level"] == "error"
    assert http_line["exception"].startswith("Traceback (most recent call last)")
    failed = wait_for(proc, lambda e: e.get("event") == "policy failed", "of the failed policy")
    assert failed["policy"] == "raise" and failed["logger"] == "sendguard.engine"
    assert failed["exception"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: this policy has a bug" in failed["exception"]
    # the ids are bound where the work happens, at the ingress and in the dispatcher
    assert failed["message_id"] == msg_id and failed["delivery_id"]
    accepted = wait_for(proc, lambda e: e.get("event") == "accepted", "of the accepted message")
    assert accepted["message_id"] == msg_id
    finished = wait_for(proc, lambda e: e.get("event") == "finished", "of the sent delivery")
    assert finished["logger"] == "sendguard.dispatcher" and finished["state"] == "sent"
    assert finished["message_id"] == msg_id and finished["delivery_id"] == failed["delivery_id"]

    # the HTTP ingress binds the message id too
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {"from": "shop@example.com", "to": ["bob@example.org"], "subject": "Hi", "text": "Hi"},
    )
    assert status == 202, answer
    via_http = wait_for(
        proc,
        lambda e: e.get("event") == "accepted" and e.get("ingress") == "http",
        "of the message accepted over HTTP",
    )
    assert via_http["message_id"] == answer["id"]
    failed_http = wait_for(
        proc,
        lambda e: e.get("event") == "policy failed" and e.get("message_id") == answer["id"],
        "of the failed policy for the HTTP message",
    )
    assert failed_http["delivery_id"] == answer["deliveries"][0]["id"]

    proc.stop()
    lines = proc.log().splitlines()
    assert lines
    for line in lines:
        # escaped, never raw: no ClientHello bytes or control characters in the file
        assert line.isascii() and line.isprintable(), line
        event = json.loads(line)
        assert isinstance(event, dict), line
        missing = {"event", "level", "timestamp", "logger"} - event.keys()
        assert not missing, f"{line} lacks {missing}"
        # event names are constants: values (like the message id) go in their own fields
        assert msg_id not in event["event"], line
        # no deprecation noise, and no traceback outside the `exception` field
        assert event["logger"] != "py.warnings", line
        assert "Traceback" not in event["event"], line
