"""Story 4, the prospect who tuned out: fatigue end to end, with events over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def test_unengaged_are_throttled_then_sunset_and_engagement_restores(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(
        policies=[
            {
                "plugin": "fatigue",
                "options": {"throttle_after": 2, "sunset_after": 3, "throttle_window": "7d"},
            }
        ]
    )
    for _ in range(2):
        send(proc, ["cold@example.org"], message())
    sink.wait_for(2)
    throttled = send(proc, ["cold@example.org"], message())
    assert proc.states(throttled) == {"cold@example.org": "delayed"}
    assert (
        "throttled: no engagement over the last 2 messages"
        in proc.transitions("cold@example.org")[-1][1]
    )

    status, answer = proc.call(
        "POST", "/v1/events", {"type": "click", "recipient": "cold@example.org"}
    )
    assert status == 202 and answer["woken"] == 1
    proc.wait_states({"cold@example.org": "sent"}, throttled)

    for _ in range(3):
        send(proc, ["cold@example.org"], message())
    sink.wait_for(4)  # throttled again after 2 without engagement
    sunset_proc_states = proc.call("GET", "/v1/recipients/cold@example.org/timeline")[1]
    assert sunset_proc_states["deliveries"][0]["state"] == "delayed"


def test_unsubscribe_bounce_complaint_drop_marketing_not_transactional(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=[{"plugin": "fatigue"}])
    for kind, who in (("unsubscribe", "u"), ("bounce", "b"), ("complaint", "c")):
        proc.call("POST", "/v1/events", {"type": kind, "recipient": f"{who}@example.org"})
        dropped = send(proc, [f"{who}@example.org"], message())
        proc.wait_states({f"{who}@example.org": "dropped"}, dropped)
        assert kind in proc.transitions(f"{who}@example.org")[-1][1]
    send(proc, ["u@example.org"], message("X-Sendguard-Class: transactional"))
    got = sink.wait_for(1)
    assert got[0].rcpt_tos == ["u@example.org"]


def test_sunset_after_enough_ignored_messages(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[
            {
                "plugin": "fatigue",
                "options": {"throttle_after": 2, "sunset_after": 2, "throttle_window": "1s"},
            }
        ]
    )
    for _ in range(2):
        send(proc, ["gone@example.org"], message())
    sink.wait_for(2)
    last = send(proc, ["gone@example.org"], message())
    proc.wait_states({"gone@example.org": "dropped"}, last)
    assert "sunset" in proc.transitions("gone@example.org")[-1][1]
