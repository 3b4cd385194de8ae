"""Premises with a lifecycle: the stories of issue 9, end to end over SMTP and HTTP."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
# Slow polling: whatever happens within the tests' timeouts happened because a fact woke it.
SLOW_POLL = {"poll_interval": "30s"}


def context(**options: Any) -> list[dict[str, Any]]:
    return [{"plugin": "context", "options": options}]


def fact(proc: SendguardProcess, key: str, value: str, **more: Any) -> dict[str, Any]:
    status, body = proc.call("POST", "/v1/facts", {"key": key, "value": value, **more})
    assert status == 202, body
    result: dict[str, Any] = body
    return result


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def delivery_id(proc: SendguardProcess, message_id: str) -> str:
    status, body = proc.call("GET", f"/v1/messages/{message_id}")
    assert status == 200, body
    ident: str = body["deliveries"][0]["id"]
    return ident


def test_a_week_old_completed_fact_does_not_vouch_for_todays_thank_you(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=context(), delivery=SLOW_POLL)
    paula = "paula@prospect.example"
    fact(proc, "last_meeting:status", "completed", contact=paula, observed_at=ago(days=7))
    thanks = message("X-Sendguard-Requires: last_meeting:status=completed", subject="Thanks!")
    msg_id = send(proc, [paula], thanks)

    assert proc.states(msg_id) == {paula: "delayed"}
    reason = proc.transitions(paula)[-1][1]
    assert "waiting for last_meeting:status=completed" in reason
    assert "was observed at" in reason

    assert fact(proc, "last_meeting:status", "no_show", contact=paula)["woken"] == 1
    proc.wait_states({paula: "dropped"}, msg_id, timeout=10)
    assert proc.transitions(paula)[-1][1] == (
        "context: last_meeting:status is 'no_show', the message requires 'completed'"
    )
    assert sink.received == []


def test_after_names_the_moment_a_fact_must_be_newer_than(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context(), delivery=SLOW_POLL)
    fact(proc, "meeting:8812:status", "completed", observed_at=ago(hours=2))
    meeting_end = ago(minutes=30)
    msg_id = send(
        proc,
        ["met@example.org"],
        message(f"X-Sendguard-Requires: meeting:8812:status=completed; after={meeting_end}"),
    )
    assert proc.states(msg_id) == {"met@example.org": "delayed"}

    fact(proc, "meeting:8812:status", "completed")
    proc.wait_states({"met@example.org": "sent"}, msg_id, timeout=10)
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["met@example.org"]]


def test_facts_match_the_contact_whatever_its_case(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context(), delivery=SLOW_POLL)
    waiting = send(
        proc, ["paula@prospect.example"], message("X-Sendguard-Requires: deal:77:stage=won")
    )
    assert proc.states(waiting) == {"paula@prospect.example": "delayed"}

    answer = fact(proc, "deal:77:stage", "won", contact="Paula@Prospect.Example")
    assert answer["contact"] == "paula@prospect.example"
    proc.wait_states({"paula@prospect.example": "sent"}, waiting, timeout=10)

    fact(proc, "deal:78:stage", "won", contact="PETER@Prospect.Example")
    at_once = send(
        proc, ["peter@prospect.example"], message("X-Sendguard-Requires: deal:78:stage=won")
    )
    proc.wait_states({"peter@prospect.example": "sent"}, at_once, timeout=10)


def test_approving_a_context_hold_overrides_it(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context(on_timeout="hold"))
    msg_id = send(
        proc,
        ["wait@example.org"],
        message("X-Sendguard-Requires: deal:1:stage=won", "X-Sendguard-Wait: 1s"),
    )
    proc.wait_states({"wait@example.org": "held"}, msg_id, timeout=10)
    assert proc.transitions("wait@example.org")[-1][1].startswith("context: waited ")

    ident = delivery_id(proc, msg_id)
    status, body = proc.call(
        "POST", f"/v1/deliveries/{ident}/approve", {"reviewer": "ana", "note": "I checked: send"}
    )
    assert status == 200, body
    proc.wait_states({"wait@example.org": "sent"}, msg_id, timeout=10)
    steps = proc.transitions("wait@example.org")
    override = steps.index(("delayed", "override by token-1: reviewer ana: I checked: send"))
    assert [state for state, _ in steps[override:]] == ["delayed", "queued", "sending", "sent"]
    assert steps[override + 1][1] == "context: override by token-1: premises not checked"
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["wait@example.org"]]


def test_a_late_fact_wakes_a_held_delivery(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context(on_timeout="hold"))
    late, still = "late@example.org", "still@example.org"
    wait = "X-Sendguard-Wait: 1s"
    late_id = send(proc, [late], message("X-Sendguard-Requires: deal:2:stage=won", wait))
    still_id = send(proc, [still], message("X-Sendguard-Requires: deal:3:stage=won", wait))
    proc.wait_states({late: "held"}, late_id, timeout=10)
    proc.wait_states({still: "held"}, still_id, timeout=10)

    assert fact(proc, "deal:2:stage", "won")["woken"] == 1
    proc.wait_states({late: "sent"}, late_id, timeout=10)
    assert ("delayed", "fact deal:2:stage arrived; judged again") in proc.transitions(late)

    assert fact(proc, "deal:3:stage", "rescheduled")["woken"] == 1
    steps = wait_reason(proc, still, "still pending")
    assert steps[-2] == ("delayed", "fact deal:3:stage arrived; judged again")
    assert steps[-1][0] == "held"
    assert proc.states(still_id) == {still: "held"}
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [[late]]


def wait_reason(
    proc: SendguardProcess, recipient: str, text: str, timeout: float = 10
) -> list[tuple[str, str]]:
    """The transitions of `recipient` once the last one's reason contains `text`."""
    deadline = time.monotonic() + timeout
    steps = proc.transitions(recipient)
    while text not in steps[-1][1]:
        assert time.monotonic() < deadline, f"{steps}\n{proc.log()[-3000:]}"
        time.sleep(0.05)
        steps = proc.transitions(recipient)
    return steps


def test_a_rescheduled_meeting_is_followed_to_its_successor(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context(), delivery=SLOW_POLL)
    msg_id = send(
        proc, ["guest@example.org"], message("X-Sendguard-Requires: meeting:8812:status=completed")
    )
    answer = fact(proc, "meeting:8812:status", "rescheduled", superseded_by="meeting:8830")
    assert answer["successor"] == "meeting:8830:status"
    assert answer["woken"] == 1
    steps = wait_reason(proc, "guest@example.org", "meeting:8830")
    assert "waiting for meeting:8830:status=completed" in steps[-1][1]
    assert proc.states(msg_id) == {"guest@example.org": "delayed"}

    assert fact(proc, "meeting:8830:status", "completed")["woken"] == 1
    proc.wait_states({"guest@example.org": "sent"}, msg_id, timeout=10)


def test_send_in_a_while_unless_a_no_show_is_marked(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context())
    unless = ("X-Sendguard-Wait: 2s", "X-Sendguard-On-Timeout: forward")
    quiet = send(
        proc, ["came@example.org"], message("X-Sendguard-Unless: meeting:1:status=no_show", *unless)
    )
    absent = send(
        proc,
        ["absent@example.org"],
        message("X-Sendguard-Unless: meeting:2:status=no_show", *unless),
    )
    assert proc.states(quiet) == {"came@example.org": "delayed"}
    assert proc.states(absent) == {"absent@example.org": "delayed"}

    fact(proc, "meeting:2:status", "no_show")
    proc.wait_states({"absent@example.org": "dropped"}, absent, timeout=10)
    assert (
        "the message is not sent when meeting:2:status=no_show"
        in (proc.transitions("absent@example.org")[-1][1])
    )
    proc.wait_states({"came@example.org": "sent"}, quiet, timeout=10)
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["came@example.org"]]


def test_campaign_premises_from_the_config_over_http(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=context(
            campaigns={"onboarding": {"requires": ["crm:{recipient}:stage=customer"]}}
        ),
        delivery=SLOW_POLL,
    )
    status, body = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["Nina@Example.org"],
            "subject": "Welcome aboard",
            "text": "Hi",
            "campaign": "onboarding",
        },
    )
    assert status == 202, body
    assert body["deliveries"][0]["state"] == "delayed"
    assert "crm:nina@example.org:stage=customer" in body["deliveries"][0]["reason"]

    fact(proc, "crm:nina@example.org:stage", "customer")
    proc.wait_states({"Nina@Example.org": "sent"}, body["id"], timeout=10)


def test_http_send_takes_unless_and_on_timeout(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context())
    status, body = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["hugo@example.org"],
            "text": "Thanks",
            "unless": ["meeting:5:status in no_show|cancelled"],
            "wait": "1s",
            "on_timeout": "forward",
        },
    )
    assert status == 202, body
    assert body["deliveries"][0]["state"] == "delayed"
    proc.wait_states({"hugo@example.org": "sent"}, body["id"], timeout=10)


def test_malformed_premises_are_refused_naming_the_field(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=context())
    status, body = proc.call(
        "POST",
        "/v1/messages",
        {"from": "shop@example.com", "to": ["a@example.org"], "unless": ["no operator"]},
    )
    assert status == 400
    assert body["error"]["field"] == "unless[0]"
    status, body = proc.call(
        "POST",
        "/v1/messages",
        {"from": "shop@example.com", "to": ["a@example.org"], "on_timeout": "later"},
    )
    assert status == 400
    assert body["error"]["field"] == "on_timeout"

    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        client.rcpt("a@example.org")
        code, reply = client.data(
            message("X-Sendguard-Requires: meeting:1:status=completed; before=2026-01-01T00:00:00Z")
        )
    assert code == 550
    assert reply.startswith(b"5.6.0 X-Sendguard-Requires:")
