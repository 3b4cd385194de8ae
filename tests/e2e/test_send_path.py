"""The send path end to end: real SMTP client → sendguard process → real SMTP sink."""

from __future__ import annotations

import smtplib
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def message(*extra_headers: str, subject: str = "Hello", message_id: str | None = None) -> bytes:
    """A small message; each call another one, with a Message-ID of its own (the same bytes
    sent again are a client's retransmission: sendguard does not send them twice)."""
    headers = [
        "From: shop@example.com",
        "To: list@example.net",
        f"Subject: {subject}",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@example.com>'}",
        *extra_headers,
    ]
    return ("\r\n".join(headers) + "\r\n\r\nHi there,\r\nthe body.\r\n").encode()


def send(
    proc: SendguardProcess, rcpts: list[str], content: bytes, sender: str = "shop@example.com"
) -> str:
    """Send over SMTP; return the queue id from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail(sender)
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            assert code == 250, reply
        code, reply = client.data(content)
    assert code == 250, reply
    text = reply.decode()
    assert text.startswith("2.0.0 Ok: queued as "), text
    return text.rsplit(" ", 1)[1]


def test_three_recipients_arrive_three_times_without_sendguard_headers(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    rcpts = ["a@example.org", "b@example.org", "c@example.net"]
    content = message(
        "X-Sendguard-Campaign: welcome",
        "X-Sendguard-Class: marketing",
        "X-SENDGUARD-Requires-Nothing: folded",
        "\tcontinuation line",
    )
    msg_id = send(proc, rcpts, content)

    got = sink.wait_for(3)
    proc.wait_states(dict.fromkeys(rcpts, "sent"), msg_id)
    assert len(sink.received) == 3  # each delivery is sent: nothing more can arrive
    assert sorted(r.rcpt_tos[0] for r in got) == sorted(rcpts)
    for received in got:
        assert received.mail_from == "shop@example.com"
        assert len(received.rcpt_tos) == 1
        assert b"x-sendguard" not in received.content.lower()
        assert b"continuation line" not in received.content
        assert received.message["Subject"] == "Hello"
        assert b"Hi there,\r\nthe body." in received.content
    proc.wait_states(dict.fromkeys(rcpts, "sent"), msg_id)


def test_not_before_survives_kill_9_and_is_delivered_once(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    due = datetime.now(UTC) + timedelta(seconds=4)
    msg_id = send(
        proc, ["later@example.org"], message(f"X-Sendguard-Not-Before: {due.isoformat()}")
    )
    assert proc.states(msg_id) == {"later@example.org": "delayed"}

    proc.kill9()
    assert sink.received == []
    proc.start()

    got = sink.wait_for(1, timeout=15)
    assert datetime.now(UTC) >= due
    proc.wait_states({"later@example.org": "sent"}, msg_id)
    assert len(sink.received) == 1
    assert got[0].rcpt_tos == ["later@example.org"]
    states = [state for state, _ in proc.transitions("later@example.org")]
    assert states == ["delayed", "queued", "sending", "sent"]


def test_upstream_451_then_250_is_retried_and_delivered(sendguard: Start, sink: Sink) -> None:
    sink.script(["451 4.3.0 try again later", "250 2.0.0 Ok"])
    proc = sendguard()
    msg_id = send(proc, ["retry@example.org"], message())

    proc.wait_states({"retry@example.org": "sent"}, msg_id, timeout=20)
    assert len(sink.received) == 1
    states = [state for state, _ in proc.transitions("retry@example.org")]
    assert states == ["queued", "sending", "deferred", "sending", "sent"]
    reasons = dict(proc.transitions("retry@example.org"))
    assert "451" in reasons["deferred"]


def test_upstream_550_ends_failed(sendguard: Start, sink: Sink) -> None:
    sink.script(["550 5.1.1 no such user"])
    proc = sendguard()
    msg_id = send(proc, ["gone@example.org"], message())

    proc.wait_states({"gone@example.org": "failed"}, msg_id)
    assert sink.received == []
    reasons = dict(proc.transitions("gone@example.org"))
    assert "550 5.1.1 no such user" in reasons["failed"]


def test_failing_store_makes_ingress_answer_451_and_nothing_is_lost(
    sendguard: Start, sink: Sink, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's write lock; PostgreSQL outages: tests/e2e/test_postgres_cluster.py")
    proc = sendguard()
    # Another process takes the database's write lock: every commit sendguard tries now fails.
    blocker = sqlite3.connect(proc.db_path, timeout=5, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=20) as client:
            client.ehlo("test")
            client.mail("shop@example.com")
            client.rcpt("x@example.org")
            code, reply = client.data(message())
        assert code == 451, reply
        assert reply.startswith(b"4.3.0")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert sink.received == []
    # The store is back: the client's retry is accepted and delivered.
    msg_id = send(proc, ["x@example.org"], message())
    sink.wait_for(1)
    proc.wait_states({"x@example.org": "sent"}, msg_id)


def test_third_party_policy_named_in_config_is_used(sendguard: Start, sink: Sink) -> None:
    """`block_domain` lives in its own distribution (tests/plugin_pkg), found by entry point."""
    proc = sendguard(
        policies=[
            {"plugin": "schedule"},
            {"plugin": "block_domain", "options": {"domains": ["blocked.example"]}},
        ]
    )
    msg_id = send(proc, ["ok@example.org", "no@blocked.example"], message())
    sink.wait_for(1)
    proc.wait_states({"ok@example.org": "sent", "no@blocked.example": "dropped"}, msg_id)
    time.sleep(0.3)
    assert [r.rcpt_tos for r in sink.received] == [["ok@example.org"]]
    reasons = dict(proc.transitions("no@blocked.example"))
    assert reasons["dropped"] == "block_domain: blocked.example is blocked"


def test_all_dropped_is_250_by_default_and_550_when_configured(
    sendguard: Start, sink: Sink
) -> None:
    policies = [{"plugin": "block_domain", "options": {"domains": ["blocked.example"]}}]
    proc = sendguard(policies=policies)
    send(proc, ["no@blocked.example"], message())
    proc.stop()

    proc = sendguard(policies=policies, smtp={"reject_dropped": True})
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        client.rcpt("no@blocked.example")
        code, reply = client.data(message())
    assert code == 550
    assert b"5.7.1" in reply
    assert b"blocked.example is blocked" in reply


def test_sigterm_finishes_an_in_flight_send_and_exits_0(sendguard: Start, sink: Sink) -> None:
    sink.handler.delay = 1.5  # the upstream is slow to answer DATA
    proc = sendguard()
    msg_id = send(proc, ["slow@example.org"], message())
    proc.wait_states({"slow@example.org": "sending"}, msg_id)

    started = time.monotonic()
    assert proc.terminate() == 0
    assert time.monotonic() - started < 10
    assert len(sink.received) == 1
    proc.start()  # the state is read through the API of the next run
    assert proc.states(msg_id) == {"slow@example.org": "sent"}


def test_without_policies_the_reason_says_so_in_plain_words(sendguard: Start, sink: Sink) -> None:
    # A config file without `policies:` runs none (docs/configuration.md#policies).
    proc = sendguard(policies=[])
    msg_id = send(proc, ["nopolicy@example.org"], message())
    proc.wait_states({"nopolicy@example.org": "sent"}, msg_id)
    (delivery,) = proc.deliveries(msg_id)
    assert delivery["reason"] == "upstream accepted; no policy is configured"
    _status, line = proc.call("GET", "/v1/recipients/nopolicy@example.org/timeline")
    assert line["deliveries"][0]["reason"] == "upstream accepted; no policy is configured"
