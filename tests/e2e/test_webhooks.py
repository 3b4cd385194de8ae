"""Outbound lifecycle webhooks end to end: a receiver that is down, then up, gets every event
once, in order per delivery, signed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sendguard.webhooks import SIGNATURE_HEADER, verify_signature
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]
SECRET = "whsec-0123456789abcdef"


class Receiver:
    """A webhook endpoint on loopback that records every POST; started when told."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/sendguard"

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(free_port())
    yield server
    server.stop()


def test_a_receiver_down_then_up_gets_every_event_once_in_order_signed(
    sendguard: Start, receiver: Receiver, tmp_path: Path
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    proc = sendguard(
        policies=[{"plugin": "schedule"}, {"plugin": "human_hold", "options": {"max_blast": None}}],
        webhooks=[
            {
                "url": receiver.url,
                "secret": f"file:{secret_file}",
                "min_backoff": "200ms",
                "max_backoff": "1s",
            }
        ],
    )
    now = send(proc, ["now@example.org"], message())
    later_at = datetime.now(UTC) + timedelta(seconds=2)
    later = send(proc, ["later@example.org"], message(f"X-Sendguard-Not-Before: {later_at}"))
    held = send(proc, ["held@example.org"], message("X-Sendguard-Campaign: spring"))
    (held_delivery,) = proc.deliveries(held)
    status, answer = proc.call("POST", f"/v1/deliveries/{held_delivery['id']}/approve", {})
    assert status == 200, answer
    proc.wait_states(
        {"now@example.org": "sent", "later@example.org": "sent", "held@example.org": "sent"},
        timeout=20,
    )
    assert receiver.received == []  # down all along: everything waits in the outbox

    receiver.start()
    expected = {
        "now@example.org": ["forwarded", "delivered"],
        "later@example.org": ["delayed", "forwarded", "delivered"],
        "held@example.org": ["held", "released", "forwarded", "delivered"],
    }
    total = sum(len(v) for v in expected.values())
    deadline = time.monotonic() + 30
    while len(receiver.received) < total:
        assert time.monotonic() < deadline, (receiver.events(), proc.log()[-3000:])
        time.sleep(0.05)
    time.sleep(0.5)  # a duplicate would show up now; the count below must stay exact

    events = receiver.events()
    assert len(events) == total
    assert len({e["id"] for e in events}) == total  # each once
    per_delivery: dict[str, list[str]] = {}
    for event in events:
        per_delivery.setdefault(event["delivery"]["recipient"], []).append(event["type"])
    assert per_delivery == expected  # in order per delivery
    messages = {e["delivery"]["recipient"]: e["delivery"]["message_id"] for e in events}
    assert messages == {
        "now@example.org": now,
        "later@example.org": later,
        "held@example.org": held,
    }

    for headers, body in receiver.received:
        signature = headers[SIGNATURE_HEADER.lower()]
        assert verify_signature(SECRET, signature, body, time.time())
        # the documented check tells a wrong secret (or a changed body) apart
        assert not verify_signature("not-the-secret-at-all", signature, body, time.time())
        assert not verify_signature(SECRET, signature, body + b" ", time.time())
        assert headers["content-type"] == "application/json"
        assert headers["x-sendguard-event-id"] == json.loads(body)["id"]


def test_a_webhook_with_an_unset_secret_is_a_config_error(sendguard: Start, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"webhooks\[0\]\.secret: environment variable"):
        sendguard(
            webhooks=[{"url": "http://127.0.0.1:9/h", "secret": "env:SENDGUARD_NO_SUCH_SECRET"}]
        )
