"""Retention never changes a decision: every configured policy decides the same after a prune.

Real built-in policies with windows longer than `store.retention`, a store filled with a year
of sends, events, facts and suppressions, on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sendguard_plugins.context import ContextOptions, ContextPolicy
from sendguard_plugins.fatigue import FatigueOptions, FatiguePolicy
from sendguard_plugins.frequency import Cap, FrequencyOptions, FrequencyPolicy, QuietHours
from sendguard_plugins.human_hold import HumanHoldOptions, HumanHoldPolicy
from sendguard_plugins.repetition import RepetitionOptions, RepetitionPolicy
from sendguard_plugins.schedule import ScheduleOptions, SchedulePolicy

from sendguard.deliveries import Change, NewDelivery
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import DeliveryState, Message, MessageClass, Requirement, SendguardFields
from sendguard.policy import PolicyContext
from sendguard.retention import Horizons
from sendguard.store.base import Store
from sendguard.suppressions import apply_event
from sendguard.testing import make_delivery
from sendguard.verdict import Decision, Verdict

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)
DAY = timedelta(days=1)
PEOPLE = (
    "rep@example.org",
    "cold@example.org",
    "clicked@example.org",
    "gone@example.org",
    "tokyo@example.org",
    "new@example.org",
    "bought@example.org",
)
POLICIES: list[tuple[str, Any]] = [
    ("schedule", SchedulePolicy(ScheduleOptions())),
    (
        "frequency",
        FrequencyPolicy(
            FrequencyOptions(
                caps=[Cap(limit=1, window=DAY), Cap(limit=4, window=timedelta(days=60))],
                quiet_hours=QuietHours(start=time(21), end=time(8)),
                max_delay=timedelta(days=90),
            )
        ),
    ),
    ("repetition", RepetitionPolicy(RepetitionOptions(limit=2, window=timedelta(days=180)))),
    (
        "fatigue",
        FatiguePolicy(
            FatigueOptions(throttle_after=2, sunset_after=3, lookback=timedelta(days=120))
        ),
    ),
    ("context", ContextPolicy(ContextOptions(max_wait=timedelta(days=400)))),
    (
        "human_hold",
        HumanHoldPolicy(
            HumanHoldOptions(hold_unapproved_campaigns=False, max_blast=2, blast_window=DAY)
        ),
    ),
]


async def sent(store: Store, recipient: str, ago: timedelta, campaign: str = "spring") -> None:
    at = NOW - ago
    message = Message(
        new_id(),
        at,
        "test",
        "s@example.com",
        (recipient,),
        Headers(()),
        SendguardFields(campaign=campaign, message_class=MessageClass.MARKETING),
        10,
        "hash",
    )
    delivery = NewDelivery(
        new_id(), recipient, DeliveryState.QUEUED, "ok", Decision(Verdict.forward()), at
    )
    await store.add_message(message, b"Subject: x\r\n\r\nx\r\n", [delivery])
    await store.change(delivery.id, Change(DeliveryState.SENT, "sent", at))


async def fill(store: Store) -> None:
    for days in (170, 140, 100):  # a repeat within repetition's 180 days
        await sent(store, "rep@example.org", timedelta(days=days))
    for days in (110, 100, 95):  # ignored for months: fatigue's 120 days says sunset
        await sent(store, "cold@example.org", timedelta(days=days), campaign=f"c{days}")
    await store.add_event(Event(EventType.CLICK, "clicked@example.org", NOW - 100 * DAY))
    for days in (90, 80, 40):
        await sent(store, "clicked@example.org", timedelta(days=days), campaign=f"k{days}")
    await apply_event(store, Event(EventType.UNSUBSCRIBE, "gone@example.org", NOW - 400 * DAY), NOW)
    await store.put_fact(Fact("timezone", "Asia/Tokyo", NOW - 300 * DAY, "tokyo@example.org"))
    await store.put_fact(Fact("deal:7", "won", NOW - 200 * DAY))
    # bought the offer 300 days ago: repetition drops it for good (purchases at any age)
    await store.add_event(
        Event(EventType.PURCHASE, "bought@example.org", NOW - 300 * DAY, offer="Spring-Sale")
    )
    for days in (50, 40, 35):  # a fourth send in 60 days would break the cap
        await sent(store, "new@example.org", timedelta(days=days), campaign=f"n{days}")
    await sent(store, "new@example.org", timedelta(hours=2), campaign="blast")
    await sent(store, "rep@example.org", timedelta(hours=3), campaign="blast")


async def decisions(store: Store) -> list[tuple[str, str, str, datetime | None]]:
    found = []
    for person in PEOPLE:
        for fields in (
            {"campaign": "spring"},
            {"campaign": "blast"},
            {"campaign": "other", "requires": (Requirement("deal:7", "won"),)},
            {"campaign": "offers", "offer": "spring-sale"},
        ):
            delivery = make_delivery(person, at=NOW - DAY, **fields)
            ctx = PolicyContext(store, NOW, {delivery.message.id: b"Subject: x\r\n\r\nx\r\n"})
            for name, policy in POLICIES:
                verdict = await policy.evaluate(delivery, ctx)
                found.append((person, name, verdict.action.value, verdict.until))
    return found


async def test_every_policy_decides_the_same_after_a_prune(store: Store) -> None:
    await fill(store)
    before = await decisions(store)
    horizons = Horizons.of(RETENTION, [policy for _, policy in POLICIES])
    assert await store.prune(horizons.cutoffs(NOW)) > 0  # the timeline was pruned
    assert await decisions(store) == before
    # The same prune at `store.retention` for everything (what sendguard did before) would
    # change decisions: the test can tell.
    await store.prune(NOW - RETENTION)
    assert await decisions(store) != before
    assert await store.get_suppression("gone@example.org") is not None


def test_horizons_take_the_longest_read_and_keep_what_is_read_at_any_age() -> None:
    horizons = Horizons.of(RETENTION, [policy for _, policy in POLICIES])
    assert horizons.history == timedelta(days=180)
    assert horizons.events == timedelta(days=120)
    assert horizons.facts is None  # context reads the latest fact at any age
    assert horizons.events_kept == {"purchase"}  # repetition: a purchase ends an offer for good
    assert horizons.deliveries == RETENTION and horizons.idempotency == RETENTION
    only_floor = Horizons.of(RETENTION, [object()])
    assert only_floor.history == only_floor.facts == RETENTION
