"""Issue 9, from a user trial: what late webhooks, wrong clocks and moved meetings must not do."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.test_context_lifecycle import SLOW_POLL, context, fact
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def at(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def event(proc: SendguardProcess, **body: Any) -> dict[str, Any]:
    status, answer = proc.call("POST", "/v1/events", body)
    assert status == 202, answer
    result: dict[str, Any] = answer
    return result


def test_a_resubscribe_older_than_the_unsubscribe_lifts_nothing(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=[{"plugin": "fatigue"}])
    assert event(proc, type="unsubscribe", recipient="b9@example.org")["suppression"] == "added"
    # a webhook replayed late: the person said yes last year, no today
    late = event(proc, type="resubscribe", recipient="B9@example.org", at=at(days=-300))
    assert late["suppression"] == "older_than_suppression"
    dropped = send(proc, ["b9@example.org"], message())
    proc.wait_states({"b9@example.org": "dropped"}, dropped)
    # a resubscribe after the unsubscribe does lift it
    assert event(proc, type="resubscribe", recipient="b9@example.org")["suppression"] == "lifted"
    send(proc, ["b9@example.org"], message())
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["b9@example.org"]]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/facts", {"key": "m:1:status", "value": "completed"}, "observed_at"),
        ("/v1/events", {"type": "open", "recipient": "a@example.org"}, "at"),
    ],
)
def test_a_moment_in_the_future_is_refused(
    sendguard: Start, path: str, body: dict[str, Any], field: str
) -> None:
    proc = sendguard(policies=context())
    status, answer = proc.call("POST", path, {**body, field: at(days=1)})
    assert status == 400 and answer["error"]["field"] == field
    assert "in the future" in answer["error"]["message"]
    status, _ = proc.call("POST", path, {**body, field: at(minutes=1)})  # a clock a bit ahead
    assert status == 202


def test_a_later_no_show_beats_a_completed_posted_with_a_fast_clock(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=context(), delivery=SLOW_POLL)
    paula = "paula@prospect.example"
    # the CRM's clock runs four minutes fast: its "completed" must not outrank what comes next
    fact(proc, "meeting:8820:status", "completed", contact=paula, observed_at=at(minutes=4))
    fact(proc, "meeting:8820:status", "no_show", contact=paula)
    thanks = message("X-Sendguard-Requires: meeting:8820:status=completed")
    dropped = send(proc, [paula], thanks)
    proc.wait_states({paula: "dropped"}, dropped)
    assert sink.received == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "meeting 1:status", "value": "completed"}, "key"),
        ({"key": "meeting:1:status", "value": "a|b"}, "value"),
        ({"key": "meeting:1:status", "value": ""}, "value"),
        (
            {"key": "meeting:1:status", "value": "x", "superseded_by": "meeting:1:status"},
            "superseded_by",
        ),
        ({"key": "meeting:1:status", "value": "x", "superseded_by": "meeting 2"}, "superseded_by"),
        ({"key": "timezone", "value": "Not/AZone", "contact": "a@example.org"}, "value"),
    ],
)
def test_a_fact_no_premise_could_match_is_refused(
    sendguard: Start, body: dict[str, Any], field: str
) -> None:
    proc = sendguard(policies=context())
    status, answer = proc.call("POST", "/v1/facts", body)
    assert status == 400 and answer["error"]["field"] == field, answer


def test_send_unless_a_no_show_holds_when_the_meeting_moved(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context(), delivery=SLOW_POLL)
    paula = "paula@prospect.example"
    later = message(
        "X-Sendguard-Unless: meeting:6101:status=no_show",
        "X-Sendguard-Wait: 3s",
        "X-Sendguard-On-Timeout: forward",
    )
    moved = send(proc, [paula], later)
    fact(proc, "meeting:6101:status", "rescheduled", contact=paula, superseded_by="meeting:6102")
    quiet = send(proc, ["quiet@example.org"], later)  # nothing comes for this one
    proc.wait_states({paula: "held"}, moved, timeout=20)
    reason = proc.transitions(paula)[-1][1]
    assert "meeting:6102:status=no_show" in reason and "not settled yet" in reason
    assert "no such fact came" not in reason
    # the meeting that never reported anything goes out on timeout, as asked
    proc.wait_states({"quiet@example.org": "sent"}, quiet, timeout=20)
    assert [r.rcpt_tos for r in sink.received] == [["quiet@example.org"]]
