"""Story 1, the call that never happened: the context policy end to end over SMTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def test_the_call_that_never_happened(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[{"plugin": "context", "options": {"max_wait": "24h", "on_timeout": "hold"}}],
        delivery={"poll_interval": "30s"},
    )
    thanks = message(
        "X-Sendguard-Requires: meeting:8812:status=completed", subject="Thanks for your time"
    )
    noshow = send(proc, ["noshow@example.org"], thanks)
    assert proc.states(noshow) == {"noshow@example.org": "delayed"}

    proc.call("POST", "/v1/facts", {"key": "meeting:8812:status", "value": "no_show"})
    # Within 10 s, a third of the 30 s poll: the fact woke it (a loaded 2-core machine may take
    # seconds to answer, so no tighter bound).
    proc.wait_states({"noshow@example.org": "dropped"}, noshow, timeout=10)
    _status, line = proc.call("GET", "/v1/recipients/noshow@example.org/timeline")
    assert line["deliveries"][0]["reason"] == (
        "context: meeting:8812:status is 'no_show', the message requires 'completed'"
    )

    met = send(
        proc, ["met@example.org"], message("X-Sendguard-Requires: meeting:9000:status=completed")
    )
    started = time.monotonic()
    proc.call("POST", "/v1/facts", {"key": "meeting:9000:status", "value": "completed"})
    sink.wait_for(1, timeout=10)
    assert time.monotonic() - started < 10.0  # woken by the fact, not by the 30 s poll
    proc.wait_states({"met@example.org": "sent"}, met)
    assert [r.rcpt_tos for r in sink.received] == [["met@example.org"]]


def test_a_fact_that_never_comes_is_held_after_the_wait(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "context"}])
    msg_id = send(
        proc,
        ["wait@example.org"],
        message("X-Sendguard-Requires: deal:1:stage=won", "X-Sendguard-Wait: 2s"),
    )
    assert proc.states(msg_id) == {"wait@example.org": "delayed"}
    proc.wait_states({"wait@example.org": "held"}, msg_id, timeout=10)
    reason = proc.transitions("wait@example.org")[-1][1]
    assert reason == "context: waited 2 seconds for deal:1:stage=won; no such fact came"
    assert sink.received == []


def test_stale_data_goes_to_on_stale(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[{"plugin": "context", "options": {"max_data_age": "1h", "on_stale": "drop"}}]
    )
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    fresh = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    stale_id = send(proc, ["stale@example.org"], message(f"X-Sendguard-Data-As-Of: {old}"))
    fresh_id = send(proc, ["fresh@example.org"], message(f"X-Sendguard-Data-As-Of: {fresh}"))
    proc.wait_states({"stale@example.org": "dropped"}, stale_id)
    proc.wait_states({"fresh@example.org": "sent"}, fresh_id)
    assert "older than max_data_age 1 hour" in proc.transitions("stale@example.org")[-1][1]
