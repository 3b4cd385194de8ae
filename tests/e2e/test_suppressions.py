"""Issue 9, suppressions that never expire: through SMTP and HTTP as a tool would send."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
FATIGUE = [{"plugin": "fatigue"}]


def wait_for_prune(proc: SendguardProcess, runs: int = 1, timeout: float = 15.0) -> None:
    """Wait until the retention task has run `runs` times since the log began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [e for e in proc.log_events() if e.get("event") == "retention: pruned"]
        if len(done) >= runs:
            return
        time.sleep(0.05)
    raise AssertionError(f"retention never ran\n{proc.log()[-3000:]}")


def test_unsubscribe_100_days_ago_still_dropped_after_a_restart_prunes(
    sendguard: Start, sink: Sink
) -> None:
    # fatigue reads 30 days of events: retention (90d) prunes the event log as before
    proc = sendguard(policies=[{"plugin": "fatigue", "options": {"lookback": "30d"}}])
    long_ago = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    status, _ = proc.call(
        "POST",
        "/v1/events",
        {"type": "unsubscribe", "recipient": "gone@example.org", "at": long_ago},
    )
    assert status == 202
    wait_for_prune(proc)
    proc.stop()
    proc.start()  # retention (90d) prunes at start: the event log no longer has the unsubscribe
    wait_for_prune(proc, runs=2)
    timeline = proc.call("GET", "/v1/recipients/gone@example.org/timeline")[1]
    assert timeline["events"] == []  # the event is gone, the suppression is not

    dropped = send(proc, ["Gone@Example.org"], message())
    proc.wait_states({"Gone@Example.org": "dropped"}, dropped)
    assert "unsubscribe" in proc.transitions("Gone@Example.org")[-1][1]
    send(proc, ["other@example.org"], message())
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["other@example.org"]]


def test_resubscribe_lifts_an_unsubscribe(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=FATIGUE)
    proc.call("POST", "/v1/events", {"type": "unsubscribe", "recipient": "back@example.org"})
    dropped = send(proc, ["back@example.org"], message())
    proc.wait_states({"back@example.org": "dropped"}, dropped)

    status, answer = proc.call(
        "POST", "/v1/events", {"type": "resubscribe", "recipient": "BACK@example.org"}
    )
    assert status == 202, answer
    assert answer["suppression"] == "lifted"
    send(proc, ["back@example.org"], message())
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["back@example.org"]]
    status, audit = proc.call("GET", "/v1/audit")
    lifts = [e for e in audit["entries"] if e["action"] == "lift"]
    assert lifts and lifts[0]["target"] == "suppression:back@example.org"
