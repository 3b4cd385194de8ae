"""The schedule policy end to end (its crash-safety is in test_send_path)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from sendguard.phrasing import human_time
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def test_not_before_delays_until_then_and_the_past_sends_now(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    later_id = send(
        proc, ["later@example.org"], message(f"X-Sendguard-Not-Before: {due.isoformat()}")
    )
    now_id = send(
        proc, ["now@example.org"], message("X-Sendguard-Not-Before: 2020-01-01T00:00:00Z")
    )

    proc.wait_states({"now@example.org": "sent"}, now_id)
    assert proc.states(later_id) == {"later@example.org": "delayed"}
    assert dict(proc.transitions("later@example.org"))["delayed"] == (
        f"schedule: not before {human_time(due)}"
    )

    got = sink.wait_for(2, timeout=10)
    assert datetime.now(UTC) >= due
    assert sorted(r.rcpt_tos[0] for r in got) == ["later@example.org", "now@example.org"]
    proc.wait_states({"later@example.org": "sent"}, later_id)
    assert len(sink.received) == 2
