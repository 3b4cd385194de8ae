"""Issue 9: approvals bound to what was approved, holds a reviewer can lift at once, a global
kill switch, and repetition by offer rather than by series. Each test is a user's story, told
over SMTP or HTTP as their tool would."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.test_cli_review import cli
from tests.e2e.test_send_path import message, send
from tests.e2e.test_suppressions import wait_for_prune
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def reason(proc: SendguardProcess, recipient: str) -> str:
    return proc.transitions(recipient)[-1][1]


def audit(proc: SendguardProcess) -> list[dict[str, Any]]:
    status, answer = proc.call("GET", "/v1/audit")
    assert status == 200
    entries: list[dict[str, Any]] = answer["entries"]
    return entries


def test_changed_copy_of_an_approved_campaign_is_held_again(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    tagged = "X-Mailgun-Tag: cart-reminder"
    first = send(proc, ["a@example.org"], message(tagged, subject="You left something"))
    assert proc.states(first) == {"a@example.org": "held"}
    status, _ = proc.call("POST", "/v1/campaigns/cart-reminder/approve", {"reviewer": "maria"})
    assert status == 200
    proc.wait_states({"a@example.org": "sent"}, first)
    same = send(proc, ["b@example.org"], message(tagged, subject="You left something"))
    proc.wait_states({"b@example.org": "sent"}, same)

    changed = send(proc, ["c@example.org"], message(tagged, subject="LAST CHANCE: 50% off"))
    proc.wait_states({"c@example.org": "held"}, changed)
    why = reason(proc, "c@example.org")
    assert "campaign cart-reminder: content changed since token-1 approved it on" in why
    assert [r.rcpt_tos[0] for r in sink.received] == ["a@example.org", "b@example.org"]

    # approving again covers the new copy too
    proc.call("POST", "/v1/campaigns/cart-reminder/approve", {"reviewer": "maria"})
    proc.wait_states({"c@example.org": "sent"}, changed)


def test_approving_a_campaign_can_release_every_hold_reason(sendguard: Start, sink: Sink) -> None:
    options = {"patterns": [r"free\s+money"], "sensitive_recipients": ["@gov.example"]}
    proc = sendguard(policies=[{"plugin": "human_hold", "options": options}])
    held = send(
        proc,
        ["pat@example.org", "pm@gov.example"],
        message("X-Campaign: promo", subject="Free money inside"),
    )
    proc.call("POST", "/v1/campaigns/promo/approve", {"reviewer": "ana"})
    # by default the approval lifts the campaign hold only: the content holds remain
    proc.wait_states({"pat@example.org": "held", "pm@gov.example": "held"}, held)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "content matches" not in reason(proc, "pat@example.org"):
        time.sleep(0.05)
    assert "content matches" in reason(proc, "pat@example.org")
    assert "sensitive recipient" in reason(proc, "pm@gov.example")

    status, answer = proc.call(
        "POST",
        "/v1/campaigns/promo/approve",
        {"reviewer": "ana", "note": "legal checked", "release": "all"},
    )
    assert status == 200 and answer["deliveries"] == 2
    proc.wait_states({"pat@example.org": "sent", "pm@gov.example": "sent"}, held)
    entry = audit(proc)[0]
    assert (entry["actor"], entry["action"], entry["target"], entry["count"]) == (
        "token-1",
        "approve-campaign",
        "campaign:promo",
        2,
    )
    assert entry["note"] == "release all; reviewer ana: legal checked"

    status, error = proc.call(
        "POST", "/v1/campaigns/promo/approve", {"reviewer": "a", "release": "x"}
    )
    assert status == 400 and error["error"]["field"] == "release"


def test_release_all_from_the_command_line(sendguard: Start, sink: Sink) -> None:
    options = {"sensitive_recipients": ["@gov.example"]}
    proc = sendguard(policies=[{"plugin": "human_hold", "options": options}])
    held = send(proc, ["pm@gov.example"], message("X-Campaign: memo"))
    out = cli(proc, "review", "approve", "--campaign", "memo", "--release-all", "--reviewer", "li")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "campaign memo: approved, 1 delivery"
    proc.wait_states({"pm@gov.example": "sent"}, held)


def test_hold_expiry_is_in_the_audit_log(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[{"plugin": "human_hold"}], review={"hold_expiry": "2s", "on_hold_expiry": "drop"}
    )
    held = send(proc, ["late@example.org"], message("X-Sendguard-Campaign: forgotten"))
    proc.wait_states({"late@example.org": "dropped"}, held, timeout=10)
    entry = audit(proc)[0]
    assert (entry["actor"], entry["action"], entry["count"]) == ("sendguard", "expire", 1)
    assert entry["target"].startswith("delivery:")
    assert "not reviewed within review.hold_expiry" in entry["note"] and "dropped" in entry["note"]


def test_transactional_password_reset_is_not_held_for_campaign_approval(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    reset = send(
        proc,
        ["ann@example.org"],
        message(
            "X-Mailgun-Tag: password-reset",
            "X-Sendguard-Class: transactional",
            subject="Reset your password",
        ),
    )
    proc.wait_states({"ann@example.org": "sent"}, reset)
    newsletter = send(proc, ["bob@example.org"], message("X-Mailgun-Tag: password-reset"))
    assert proc.states(newsletter) == {"bob@example.org": "held"}


def test_untagged_blast_is_held_by_its_fingerprint(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold", "options": {"max_blast": 5}}])
    rcpts = [f"r{i}@example.org" for i in range(8)]
    blast = send(proc, rcpts, message(subject="Big news"))
    assert set(proc.states(blast).values()) == {"held"}
    assert "more than 5 deliveries" in reason(proc, "r0@example.org")
    small = send(proc, ["one@example.org"], message(subject="Something else"))
    proc.wait_states({"one@example.org": "sent"}, small)


def test_global_pause_holds_everything_until_resumed_even_across_a_restart(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    status, answer = proc.call("POST", "/v1/pause", {"reviewer": "ops", "note": "incident 42"})
    assert status == 200 and answer["paused"] is True
    untagged = send(proc, ["u@example.org"], message())
    assert proc.states(untagged) == {"u@example.org": "held"}
    assert (
        reason(proc, "u@example.org")
        == "global-pause: sending is paused by token-1: reviewer ops: incident 42"
    )

    proc.stop()
    proc.start()
    status, state = proc.call("GET", "/v1/pause")
    assert status == 200 and state["paused"] is True and state["updated_by"] == "token-1"
    later = send(proc, ["v@example.org"], message("X-Campaign: news"))
    assert proc.states(later) == {"v@example.org": "held"}
    status, campaigns = proc.call("GET", "/v1/campaigns")
    assert campaigns["pause"]["paused"] is True

    out = cli(proc, "resume", "--reviewer", "ops")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "all sending: resumed, 2 deliveries"
    proc.wait_states({"u@example.org": "sent", "v@example.org": "sent"})
    assert [(e["actor"], e["action"], e["target"]) for e in audit(proc)[:2]] == [
        ("token-1", "resume", "all"),
        ("token-1", "pause", "all"),
    ]

    out = cli(proc, "review", "pause", "--reviewer", "ops")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "all sending: paused, 0 deliveries"
    assert proc.call("GET", "/v1/pause")[1]["paused"] is True


def test_rejected_campaign_shows_rejected_even_when_paused(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    send(proc, ["a@example.org"], message("X-Campaign: dud"))
    proc.call("POST", "/v1/campaigns/dud/pause", {"reviewer": "ana"})
    proc.call("POST", "/v1/campaigns/dud/reject", {"reviewer": "ana"})
    status, answer = proc.call("GET", "/v1/campaigns")
    assert status == 200
    dud = {c["name"]: c for c in answer["campaigns"]}["dud"]
    assert (dud["state"], dud["approval"], dud["paused"]) == ("rejected", "rejected", True)


REPETITION = [{"plugin": "repetition", "options": {"limit": 2, "window": "30d"}}]


def test_a_newsletter_series_flows_beside_a_repeated_offer(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REPETITION)
    for issue in (1, 2, 3):
        sent = send(
            proc,
            ["ann@example.org"],
            message("List-Id: Weekly <weekly-digest.example.com>", subject=f"Weekly #{issue}"),
        )
        proc.wait_states({"ann@example.org": "sent"}, sent)

    offer = "X-Sendguard-Offer: spring-sale"
    for copy in ("20% off everything", "Still 20% off"):
        sent = send(proc, ["ann@example.org"], message(offer, subject=copy))
        proc.wait_states({"ann@example.org": "sent"}, sent)
    third = send(proc, ["ann@example.org"], message(offer, subject="Last call: 20% off"))
    proc.wait_states({"ann@example.org": "dropped"}, third)
    assert "already sent offer spring-sale 2 times within" in reason(proc, "ann@example.org")
    assert len(sink.received) == 5


def test_a_purchase_ends_the_offer_at_once(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REPETITION)
    status, _ = proc.call(
        "POST", "/v1/events", {"type": "purchase", "recipient": "bo@example.org", "offer": "boots"}
    )
    assert status == 202
    status, sent = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["bo@example.org", "cy@example.org"],
            "subject": "Boots, 10% off",
            "text": "Still thinking about those boots?",
            "offer": "boots",
        },
    )
    assert status == 202
    states = {d["recipient"]: (d["state"], d["reason"]) for d in sent["deliveries"]}
    assert states["bo@example.org"][0] == "dropped"
    assert "repetition: bought boots on" in states["bo@example.org"][1]
    assert states["cy@example.org"][0] == "queued"
    sink.wait_for(1)
    status, view = proc.call("GET", f"/v1/messages/{sent['id']}")
    assert view["offer"] == "boots"


def test_a_purchase_long_ago_still_ends_the_offer_after_retention_prunes(
    sendguard: Start, sink: Sink
) -> None:
    """Retention (90 days by default) prunes the event log, but not the purchases repetition
    reads at any age: the boots bought 400 days ago are not offered again after a restart."""
    proc = sendguard(policies=[*REPETITION, {"plugin": "fatigue", "options": {"lookback": "30d"}}])
    long_ago = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    for kind, extra in (("purchase", {"offer": "Boots"}), ("open", {})):
        event = {"type": kind, "recipient": "bo@example.org", "at": long_ago, **extra}
        assert proc.call("POST", "/v1/events", event)[0] == 202
    proc.stop()
    proc.start()  # retention prunes at start
    wait_for_prune(proc, runs=2)  # the log goes on across the restart: the first run's prune too
    events = proc.call("GET", "/v1/recipients/bo@example.org/timeline")[1]["events"]
    assert [e["type"] for e in events] == ["purchase"]  # the old open went, the purchase stays
    status, sent = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["bo@example.org"],
            "subject": "Boots, 10% off",
            "text": "Still thinking about those boots?",
            "offer": "boots",
        },
    )
    assert status == 202
    (delivery,) = sent["deliveries"]
    assert delivery["state"] == "dropped" and "repetition: bought boots on" in delivery["reason"]


def test_generated_copy_is_reviewed_by_a_sample_of_each_variant(
    sendguard: Start, sink: Sink
) -> None:
    sample = {"review_sample": {"first": 2}}
    proc = sendguard(policies=[{"plugin": "human_hold", "options": sample}])
    tagged = "X-Campaign: ai-copy"
    rcpts = [f"g{i}@example.org" for i in range(4)]
    first = send(proc, rcpts, message(tagged, subject="Picked for you: hiking boots"))
    assert set(proc.states(first).values()) == {"held"}
    assert "sample 1 of 2 of new content in campaign ai-copy" in reason(proc, "g0@example.org")
    assert "sample 2 of 2" in reason(proc, "g1@example.org")
    assert "waits for its sample's review" in reason(proc, "g3@example.org")

    proc.call("POST", "/v1/campaigns/ai-copy/approve", {"reviewer": "maria"})
    proc.wait_states(dict.fromkeys(rcpts, "sent"), first)
    same = send(proc, ["g4@example.org"], message(tagged, subject="Picked for you: hiking boots"))
    proc.wait_states({"g4@example.org": "sent"}, same)

    variant = send(
        proc,
        ["g5@example.org", "g6@example.org", "g7@example.org"],
        message(tagged, subject="Picked for you: rain jackets"),
    )
    assert set(proc.states(variant).values()) == {"held"}
    assert "sample 1 of 2 of new content" in reason(proc, "g5@example.org")
    assert "waits for its sample's review" in reason(proc, "g7@example.org")
