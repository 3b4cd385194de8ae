"""human_hold bound to approved content, sampled review, blasts without a campaign; repetition
by offer, ended by a purchase."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sendguard_plugins.human_hold import HumanHoldOptions, HumanHoldPolicy, ReviewSample
from sendguard_plugins.repetition import RepetitionOptions, RepetitionPolicy

from sendguard.approvals import Approval, ContentApproval
from sendguard.content import content_hash
from sendguard.events import EventType
from sendguard.message import Delivery, MessageClass, SendguardFields
from sendguard.testing import make_delivery
from sendguard.verdict import Action
from tests.unit.conftest import T0, Harness
from tests.unit.test_policies import ANN, DAY


def raw(body: str) -> bytes:
    return f"Subject: Offer\r\n\r\n{body}\r\n".encode()


def with_content(delivery: Delivery, body: str) -> Delivery:
    return replace(
        delivery, message=replace(delivery.message, content_hash=content_hash(raw(body)))
    )


def of(body: str, recipient: str = ANN, **fields: object) -> Delivery:
    return with_content(make_delivery(recipient, **fields), body)


async def test_approval_covers_the_content_it_saw(harness: Harness) -> None:
    h = await harness(HumanHoldPolicy, HumanHoldOptions())
    await h.campaign("cart", Approval.APPROVED, by="maria")
    await h.store.add_approvals(
        [ContentApproval("cart", of("v1").message.content_hash or "", "maria", T0)]
    )
    assert (await h.evaluate(of("v1", campaign="cart"))).action is Action.FORWARD
    v = await h.evaluate(of("v2", campaign="cart"))
    assert v.action is Action.HOLD
    assert "campaign cart: content changed since maria approved it on 2026-03-10" in v.reason
    unbound = HumanHoldPolicy(HumanHoldOptions(bind_approval_to_content=False))
    assert (await unbound.evaluate(of("v2", campaign="cart"), h.context())).action is Action.FORWARD


async def test_transactional_class_is_exempt_from_the_campaign_rule(harness: Harness) -> None:
    h = await harness(HumanHoldPolicy, HumanHoldOptions(sensitive_recipients=["@gov.example"]))
    reset = of("reset", campaign="password-reset", message_class=MessageClass.TRANSACTIONAL)
    assert (await h.evaluate(reset)).action is Action.FORWARD
    # only the campaign rule: a sensitive recipient is held whatever the class
    official = of("reset", "pm@gov.example", campaign="x", message_class=MessageClass.TRANSACTIONAL)
    assert (await h.evaluate(official)).action is Action.HOLD
    strict = HumanHoldPolicy(HumanHoldOptions(exempt_classes=[]))
    assert (await strict.evaluate(reset, h.context())).action is Action.HOLD


async def test_blast_without_campaign_counts_by_fingerprint(harness: Harness) -> None:
    h = await harness(HumanHoldPolicy, HumanHoldOptions(max_blast=2))
    for i in range(2):
        await h.sent(f"r{i}@example.org", at=T0, campaign=None, content=raw("Same"))
    v = await h.evaluate(of("Same"))
    assert v.action is Action.HOLD and "content" in v.reason
    assert "more than 2 deliveries" in v.reason
    assert (await h.evaluate(of("Other"))).action is Action.FORWARD
    by_campaign = HumanHoldPolicy(HumanHoldOptions(max_blast=2, blast_by=["campaign"]))
    assert (await by_campaign.evaluate(of("Same"), h.context())).action is Action.FORWARD


async def test_review_sample_holds_the_first_of_each_variant_then_spot_checks(
    harness: Harness,
) -> None:
    h = await harness(HumanHoldPolicy)  # the store and the clock; the policy draws its own dice
    draws = iter([0.9, 0.1])
    policy = HumanHoldPolicy(
        HumanHoldOptions(review_sample=ReviewSample(first=2, share=0.5)), chance=lambda: next(draws)
    )
    message = replace(
        of("gen").message,
        fields=SendguardFields(campaign="ai"),
        recipients=("a@x.org", "b@x.org", "c@x.org"),
    )
    reasons = []
    for recipient in message.recipients:
        delivery = replace(
            of("gen", recipient, campaign="ai"), message=message, recipient=recipient
        )
        v = await policy.evaluate(delivery, h.context())
        assert v.action is Action.HOLD
        reasons.append(v.reason)
    assert reasons[0].startswith("sample 1 of 2 of new content in campaign ai")
    assert reasons[1].startswith("sample 2 of 2")
    assert "waits for its sample's review" in reasons[2]
    await h.campaign("ai", Approval.APPROVED, by="maria")
    await h.store.add_approvals([ContentApproval("ai", message.content_hash or "", "maria", T0)])
    later = replace(of("gen", campaign="ai"), message=replace(message, id="m2"))
    assert (await policy.evaluate(later, h.context())).action is Action.FORWARD  # draw 0.9
    v = await policy.evaluate(later, h.context())  # draw 0.1 < share 0.5
    assert v.action is Action.HOLD and "spot check of campaign ai" in v.reason


async def test_repetition_counts_the_offer_not_the_series(harness: Harness) -> None:
    h = await harness(RepetitionPolicy, RepetitionOptions(limit=2, window=timedelta(days=30)))
    for issue in ("Issue 1", "Issue 2"):
        await h.sent(at=T0 - DAY, campaign="weekly-digest", content=raw(issue))
    third = of("Issue 3", campaign="weekly-digest")
    assert (await h.evaluate(third)).action is Action.FORWARD
    for copy in ("Deal A", "Deal B"):
        await h.sent(at=T0 - DAY, campaign=None, content=raw(copy), offer="spring-sale")
    v = await h.evaluate(of("Deal C", offer="spring-sale"))
    assert v.action is Action.DROP and "already sent offer spring-sale 2 times" in v.reason
    by_campaign = RepetitionPolicy(RepetitionOptions(limit=2, match=("campaign",)))
    v = await by_campaign.evaluate(third, h.context())
    assert v.action is Action.DROP and "campaign weekly-digest 2 times" in v.reason


async def test_a_purchase_ends_the_offer_at_once(harness: Harness) -> None:
    h = await harness(RepetitionPolicy, RepetitionOptions(limit=5))
    await h.event(EventType.PURCHASE, ANN, at=T0 - DAY, offer="spring-sale")
    v = await h.evaluate(of("Deal", offer="spring-sale"))
    assert v.action is Action.DROP and v.reason.startswith("bought spring-sale on 2026-03-09")
    assert (await h.evaluate(of("Deal", offer="winter-sale"))).action is Action.FORWARD
    other = of("Deal", "bob@example.org", offer="spring-sale")
    assert (await h.evaluate(other)).action is Action.FORWARD
