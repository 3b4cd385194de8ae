"""`Server: sendguard` on every kind of answer, set by the `guard` middleware since session 14
(an `on_response_prepare` signal set it before): handlers' answers, every error the middleware
writes, and a redirect it raises on (the review page's sign-in)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import pytest

from sendguard.password import hash_password
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]

USERS = {"ana": {"password_hash": hash_password("ana-password"), "role": "reviewer"}}


def _answer(
    proc: SendguardProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[str], bytes]:
    """Status, every Server header and the body; a redirect is not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", proc.http_port, timeout=30)
    try:
        connection.request(method, path, body, headers or {})
        answer = connection.getresponse()
        return answer.status, answer.headers.get_all("Server") or [], answer.read()
    finally:
        connection.close()


def test_every_kind_of_answer_says_server_sendguard(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(review={"users": USERS})
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    send = json.dumps(
        {"from": "shop@example.com", "to": ["ann@example.org"], "subject": "Hi", "text": "Hello"}
    ).encode()
    cases = [
        ("POST", "/v1/messages", send, auth, 202),  # a handler's answer
        ("POST", "/v1/messages", b"{", auth, 400),  # the error shape
        ("POST", "/v1/messages", send, {"Content-Type": "application/json"}, 401),
        ("GET", "/v1/messages/no-such-message", None, auth, 404),
        ("GET", "/no/such/path", None, auth, 404),  # the router's
        ("DELETE", "/v1/messages", None, auth, 405),
        ("POST", "/v1/messages", send, {**auth, "Content-Length": str(10**9)}, 413),
        ("GET", "/healthz", None, {}, 200),  # public
        ("HEAD", "/healthz", None, {}, 200),
        ("GET", "/review", None, {}, 303),  # a redirect to the sign-in
    ]
    for method, path, body, headers, status in cases:
        got, server, _ = _answer(proc, method, path, body, headers)
        assert (got, server) == (status, ["sendguard"]), (method, path)
