"""Story 5, nobody approved this: human_hold end to end (review actions are in test_http_api)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.test_http_api import send_json
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def test_new_campaign_waits_for_approval_then_flows(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    first = send(proc, ["a@example.org", "b@example.org"], message("X-Sendguard-Campaign: launch"))
    assert proc.states(first) == {"a@example.org": "held", "b@example.org": "held"}
    time.sleep(0.3)
    assert sink.received == []
    proc.call("POST", "/v1/campaigns/launch/approve", {"reviewer": "ana"})
    sink.wait_for(2)
    later = send(proc, ["c@example.org"], message("X-Sendguard-Campaign: launch"))
    proc.wait_states({"c@example.org": "sent"}, later)


def test_blast_patterns_and_sensitive_recipients_are_held(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[
            {
                "plugin": "human_hold",
                "options": {
                    "hold_unapproved_campaigns": False,
                    "max_blast": 3,
                    "blast_window": "1h",
                    "patterns": [r"free\s+money"],
                    "sensitive_recipients": ["@gov.example"],
                },
            }
        ]
    )
    small = send(proc, ["1@example.org", "2@example.org"], message("X-Campaign: blast"))
    proc.wait_states({"1@example.org": "sent", "2@example.org": "sent"}, small)
    big = send(proc, ["3@example.org", "4@example.org"], message("X-Campaign: blast"))
    assert set(proc.states(big).values()) == {"held"}
    assert "more than 3 deliveries" in proc.transitions("3@example.org")[-1][1]

    spam = send_json(proc, to=["x@example.org"], subject="Hello", text="Get FREE money today")
    assert spam["deliveries"][0]["state"] == "held"
    assert "content matches" in spam["deliveries"][0]["reason"]
    official = send(proc, ["minister@gov.example"], message())
    assert proc.states(official) == {"minister@gov.example": "held"}


def test_unreviewed_hold_expires_as_configured(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[{"plugin": "human_hold"}], review={"hold_expiry": "2s", "on_hold_expiry": "drop"}
    )
    held = send(proc, ["late@example.org"], message("X-Sendguard-Campaign: forgotten"))
    assert proc.states(held) == {"late@example.org": "held"}
    proc.wait_states({"late@example.org": "dropped"}, held, timeout=10)
    assert (
        "not reviewed within review.hold_expiry (2 seconds)"
        in proc.transitions("late@example.org")[-1][1]
    )
    assert sink.received == []


def test_a_campaign_sent_with_the_null_sender_is_no_bounce(sendguard: Start, sink: Sink) -> None:
    # Session-11 trial: a marketing blast naming an unapproved campaign, sent with MAIL FROM:<>,
    # was taken for a bounce (transactional, exempt) and flowed past human_hold. No MTA puts a
    # campaign on a DSN: such a message takes the class it names, marketing by default.
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    blast = send(proc, ["a@example.org"], message("X-Campaign: black-friday"), sender="<>")
    proc.wait_states({"a@example.org": "held"}, blast)
    status, shown = proc.call("GET", f"/v1/messages/{blast}")
    assert status == 200 and shown["class"] == "marketing", shown
    status, answer = proc.call(
        "POST",
        "/v1/messages?from=%3C%3E",
        {"from": "shop@example.com", "to": ["b@example.org"], "subject": "BF", "text": "x",
         "campaign": "black-friday"},
    )  # fmt: skip
    assert status == 202 and answer["deliveries"][0]["state"] == "held", answer
    # A real bounce (no campaign) is still transactional and flows; so does a campaign's
    # message that says it is transactional.
    bounce = send(proc, ["c@example.org"], message(subject="Undelivered Mail"), sender="<>")
    said = send(
        proc,
        ["d@example.org"],
        message("X-Campaign: receipts", "X-Sendguard-Class: transactional"),
        sender="<>",
    )
    proc.wait_states({"c@example.org": "sent"}, bounce)
    proc.wait_states({"d@example.org": "sent"}, said)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["c@example.org", "d@example.org"]
