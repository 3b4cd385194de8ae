"""Issue 12: reviewer notifications — a webhook (Slack/Mattermost `{"text": ...}`) and an e-mail
through the upstream when a campaign is first held, retried while the receiver is down, and a
digest while work waits."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.test_review_page import hold_plain
from tests.support.process import SendguardProcess, free_port
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

Start = Callable[..., SendguardProcess]
HOLD = [{"plugin": "human_hold"}]
FAST = {"check_every": "1s", "retry_min": "1s", "retry_max": "2s", "digest_every": None}


class Receiver:
    """An incoming webhook on loopback: records the JSON of every POST."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/abc"

    def texts(self) -> list[str]:
        return [str(b["text"]) for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def metric(proc: SendguardProcess, channel: str, outcome: str) -> float:
    _, text = proc.http_get("/metrics")
    found = re.search(
        rf'^sendguard_review_notifications_total\{{channel="{channel}",outcome="{outcome}"\}}'
        r" (\S+)$",
        text.decode(),
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def test_a_webhook_hears_when_a_campaign_is_first_held_with_a_link_to_the_page(
    sendguard: Start, sink: Sink, receiver: Receiver
) -> None:
    proc = sendguard(
        policies=HOLD,
        review={
            "public_url": "https://review.example/sg",
            "notify": {**FAST, "webhook_url": receiver.url},
        },
    )
    hold_plain(proc)
    wait_for(lambda: len(receiver.bodies) == 1)
    text = receiver.texts()[0]
    assert set(receiver.bodies[0]) == {"text"}  # what Slack and Mattermost accept
    assert "campaign spring-sale is held for review: 1 delivery" in text
    assert "campaign spring-sale is not approved" in text  # the reason, in words
    assert "https://review.example/sg/review?campaign=spring-sale" in text

    # More of the same campaign is no first hold; another campaign is.
    hold_plain(proc, "ben@example.org")
    hold_plain(proc, "cy@example.org", "autumn")
    wait_for(lambda: any("campaign autumn" in t for t in receiver.texts()))
    assert sum("spring-sale" in t for t in receiver.texts()) == 1
    assert metric(proc, "webhook", "sent") == 2
    assert sink.received == []  # the held mail stays held


def test_a_receiver_that_is_down_then_up_still_hears_it(sendguard: Start, sink: Sink) -> None:
    port = free_port()
    proc = sendguard(
        policies=HOLD,
        review={"notify": {**FAST, "webhook_url": f"http://127.0.0.1:{port}/hook"}},
    )
    hold_plain(proc)
    wait_for(lambda: metric(proc, "webhook", "retried") >= 1)  # failed, counted, retried
    # Sending is not held up by the failing webhook.
    status, _ = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "a@shop.example",
            "to": ["ann@example.org"],
            "subject": "Receipt",
            "text": "Thanks",
            "class": "transactional",
        },
    )
    assert status == 202
    sink.wait_for(1)

    late = Receiver(port)
    try:
        wait_for(lambda: len(late.bodies) == 1)
        assert "campaign spring-sale is held for review" in late.texts()[0]
        assert (
            f"http://{proc.config['http']['listen']}/review?campaign=spring-sale"
            in (late.texts()[0])
        )
        wait_for(lambda: metric(proc, "webhook", "sent") == 1)
    finally:
        late.close()


def test_an_email_notice_goes_through_the_upstream_and_is_never_held(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(
        policies=HOLD,
        review={
            "notify": {
                **FAST,
                "email_to": ["reviewers@shop.example"],
                "email_from": "sendguard@shop.example",
            }
        },
    )
    hold_plain(proc)
    sink.wait_for(1)
    mail = sink.received[0]
    assert mail.rcpt_tos == ["reviewers@shop.example"]
    assert mail.mail_from == "sendguard@shop.example"
    assert mail.message["Subject"] == "sendguard: campaign spring-sale is held for review"
    body = mail.message.get_payload(decode=True).decode()
    assert "campaign spring-sale is not approved" in body
    assert "/review?campaign=spring-sale" in body
    # Never judged by sendguard's policies: no delivery of it exists (and none is held).
    assert [d["recipient"] for d in proc.deliveries()] == ["ann@example.org"]
    assert metric(proc, "email", "sent") == 1


def test_a_digest_goes_out_while_work_waits(
    sendguard: Start, sink: Sink, receiver: Receiver
) -> None:
    proc = sendguard(
        policies=HOLD,
        review={"notify": {**FAST, "digest_every": "2s", "webhook_url": receiver.url}},
    )
    hold_plain(proc)
    hold_plain(proc, "ben@example.org", "autumn")
    wait_for(lambda: any("wait for review" in t for t in receiver.texts()))
    digest = next(t for t in receiver.texts() if "wait for review" in t)
    assert "2 held deliveries wait for review in 2 campaigns" in digest
    assert "autumn 1, spring-sale 1" in digest
