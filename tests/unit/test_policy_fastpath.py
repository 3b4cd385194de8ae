"""The built-in policies' `evaluate_now` (`JudgesAtOnce`) against their `evaluate`: on a
context the engine has read the recipient and the campaign into, every verdict it gives is
the one `evaluate` gives on a context that reads everything from the store; the common cases
get one; and the records a decision makes without their __init__ are the __init__'s own."""

from __future__ import annotations

import random
from dataclasses import fields
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sendguard_plugins.context import ContextPolicy
from sendguard_plugins.fatigue import FatiguePolicy
from sendguard_plugins.frequency import FrequencyPolicy
from sendguard_plugins.human_hold import HumanHoldPolicy
from sendguard_plugins.repetition import RepetitionPolicy
from sendguard_plugins.schedule import SchedulePolicy

from sendguard.approvals import Approval
from sendguard.deliveries import HistoryEntry
from sendguard.engine import PolicyBinding, history_span
from sendguard.events import Event, EventType
from sendguard.fields import parse_requirement
from sendguard.message import Delivery, MessageClass
from sendguard.policy import JudgesAtOnce, PolicyContext
from sendguard.recipient import RecipientReads, SendRows, send_kind
from sendguard.store.sql_history import SqlHistory
from sendguard.suppressions import apply_event
from sendguard.testing import FakeClock, PolicyHarness
from sendguard.verdict import (
    ENFORCE,
    SHADOW,
    Action,
    Decision,
    PolicyOutcome,
    Verdict,
    combine,
    outcome,
)

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PEOPLE = ["ann@example.org", "Bob@Example.org", "cy@example.org", "di@example.org"]

POLICIES: list[tuple[type[Any], dict[str, Any]]] = [
    (SchedulePolicy, {}),
    (ContextPolicy, {}),
    (ContextPolicy, {"campaigns": {"c2": {"requires": ["k=v"]}}}),
    (FrequencyPolicy, {}),
    (FrequencyPolicy, {"caps": [{"scope": "campaign", "limit": 1, "window": "2d"}]}),
    (FrequencyPolicy, {"quiet_hours": {"start": "21:00", "end": "08:00"}}),
    (FrequencyPolicy, {"caps": [{"scope": "domain", "limit": 2, "window": "1d"}]}),
    (RepetitionPolicy, {}),
    (RepetitionPolicy, {"match": ["campaign"], "limit": 1}),
    (FatiguePolicy, {"throttle_after": 2, "sunset_after": 4}),
    (FatiguePolicy, {}),
    (HumanHoldPolicy, {}),
    # approvals, samples and counts are read in `evaluate`: only a rejected campaign
    (HumanHoldPolicy, {"hold_unapproved_campaigns": False}),
    (HumanHoldPolicy, {"review_sample": {"first": 1}}),
]
FEW = {len(POLICIES) - 2, len(POLICIES) - 1}
"""The configurations whose `evaluate_now` answers few of these deliveries."""


async def _history(h: PolicyHarness[Any], rng: random.Random) -> None:
    for i in range(6):  # over every cap, throttled and sunset
        await h.sent(PEOPLE[1], at=T0 - timedelta(hours=9 * i + 1), campaign="c1")
    for person in PEOPLE[1:]:
        for _ in range(rng.randrange(7)):
            await h.sent(
                person,
                at=T0 - timedelta(hours=rng.randrange(1, 24 * 9)),
                campaign=rng.choice([None, "c1", "c2"]),
                message_class=rng.choice([MessageClass.MARKETING, MessageClass.TRANSACTIONAL]),
            )
    await h.event(EventType.OPEN, PEOPLE[2], at=T0 - timedelta(hours=30))
    await h.fact("timezone", "Europe/Berlin", contact=PEOPLE[3])
    await apply_event(h.store, Event(EventType.UNSUBSCRIBE, PEOPLE[3], T0 - DAY), T0 - DAY)
    await h.campaign("c1", Approval.APPROVED)
    await h.campaign("c3", Approval.REJECTED)


def _deliveries(h: PolicyHarness[Any]) -> list[Delivery]:
    made = []
    for person in PEOPLE:
        for campaign in (None, "c1", "c2", "c3", "c4"):
            for kind in (MessageClass.MARKETING, MessageClass.TRANSACTIONAL):
                made.append(h.delivery(person, campaign=campaign, message_class=kind))
        made.append(h.delivery(person, not_before=T0 + timedelta(hours=2)))
        made.append(h.delivery(person, not_before=T0 - timedelta(hours=2)))
        made.append(h.delivery(person, offer="Spring-Sale"))
        made.append(h.delivery(person, requires=[parse_requirement("k=v", field="requires")]))
        made.append(h.delivery(person, data_as_of=T0 - timedelta(hours=2)))
        made.append(h.delivery(person, campaign="c1", content=b"Subject: Hi\r\n\r\nhello\r\n"))
    return made


async def _read_as_the_engine(h: PolicyHarness[Any], delivery: Delivery) -> PolicyContext:
    bindings = [PolicyBinding("p", h.policy)]
    ctx = PolicyContext(
        h.store,
        h.clock.now(),
        {},
        history_span=history_span(bindings),
        events_span=history_span(bindings, "events"),
    )
    await ctx.recipient(delivery.recipient)
    if delivery.campaign is not None:
        await ctx.campaign(delivery.campaign)
    return ctx


@pytest.mark.parametrize(
    ("index", "policy_class", "options"), [(i, *p) for i, p in enumerate(POLICIES)]
)
async def test_evaluate_now_gives_evaluate_s_verdict_or_none(
    index: int, policy_class: type[Any], options: dict[str, Any]
) -> None:
    rng = random.Random(7)
    async with PolicyHarness(policy_class, options, clock=FakeClock(T0)) as h:
        assert isinstance(h.policy, JudgesAtOnce)
        await _history(h, rng)
        answered = 0
        for delivery in _deliveries(h):
            now = h.policy.evaluate_now(delivery, await _read_as_the_engine(h, delivery))
            # `evaluate` on a context that reads each thing from the store when asked
            expected = await h.policy.evaluate(delivery, PolicyContext(h.store, T0, {}))
            if now is not None:
                answered += 1
                assert now == expected, delivery
            # and on the engine's context, whatever evaluate_now said
            again = await h.policy.evaluate(delivery, await _read_as_the_engine(h, delivery))
            assert again == expected, delivery
        # the common cases are answered at once
        assert answered >= (4 if index in FEW else len(_deliveries(h)) // 4)


class _EntriesRead:
    """The harness's store, whose recipient read answers the sends as a list of HistoryEntrys
    (as a store without `SendRows` does: `PolicyReads.recipient_reads`' default, PendingReads)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def recipient_reads(self, recipient: str, **kwargs: Any) -> RecipientReads:
        found: RecipientReads = await self._store.recipient_reads(recipient, **kwargs)
        assert isinstance(found.history, SendRows)
        history = list(found.history)
        return RecipientReads(
            history, found.events, found.suppression, found.timezone, found.copies
        )


@pytest.mark.parametrize(
    ("index", "policy_class", "options"), [(i, *p) for i, p in enumerate(POLICIES)]
)
async def test_evaluate_now_on_entries_as_on_rows(
    index: int, policy_class: type[Any], options: dict[str, Any]
) -> None:
    """Counted on the rows' microseconds (a SQL store's `SendRows`) or on a list of entries'
    datetimes (any other store), the same verdicts."""
    rng = random.Random(11)
    async with PolicyHarness(policy_class, options, clock=FakeClock(T0)) as h:
        await _history(h, rng)
        answered = 0
        for delivery in _deliveries(h):
            rows = await _read_as_the_engine(h, delivery)
            bindings = [PolicyBinding("p", h.policy)]
            entries = PolicyContext(
                _EntriesRead(h.store),  # type: ignore[arg-type]
                T0,
                {},
                history_span=history_span(bindings),
                events_span=history_span(bindings, "events"),
            )
            await entries.recipient(delivery.recipient)
            if delivery.campaign is not None:
                await entries.campaign(delivery.campaign)
            on_rows = h.policy.evaluate_now(delivery, rows)
            on_entries = h.policy.evaluate_now(delivery, entries)
            assert on_entries == on_rows, delivery
            answered += on_rows is not None
        assert answered >= (1 if index in FEW else len(_deliveries(h)) // 8)


@pytest.mark.parametrize(("policy_class", "options"), POLICIES[:2] + POLICIES[3:4] + POLICIES[7:8])
async def test_evaluate_now_answers_nothing_it_has_not_read(
    policy_class: type[Any], options: dict[str, Any]
) -> None:
    async with PolicyHarness(policy_class, options, clock=FakeClock(T0)) as h:
        await h.sent(PEOPLE[0], at=T0 - timedelta(hours=1))
        delivery = h.delivery(PEOPLE[0], not_before=T0 + DAY)
        unread = PolicyContext(h.store, T0, {})  # nothing read: the harness's own context
        verdict = h.policy.evaluate_now(delivery, unread)
        if policy_class in (ContextPolicy,):
            assert verdict == await h.policy.evaluate(delivery, unread)  # it reads nothing
        else:
            assert verdict is None


async def test_quiet_hours_in_the_recipient_s_zone_at_once() -> None:
    options = {"quiet_hours": {"start": "21:00", "end": "08:00"}}
    async with PolicyHarness(FrequencyPolicy, options, clock=FakeClock(T0)) as h:
        await h.fact("timezone", "Asia/Tokyo", contact="ann@example.org")
        delivery = h.delivery("ann@example.org")
        verdict = h.policy.evaluate_now(delivery, await _read_as_the_engine(h, delivery))
        assert verdict is not None
        assert verdict.action is Action.DELAY  # 21:00 in Tokyo
        assert verdict.until == datetime.combine(T0.date() + DAY, time(8), tzinfo=UTC) - timedelta(
            hours=9
        )


def test_an_outcome_made_without_init_is_init_s_own() -> None:
    verdict = Verdict.delay(T0, "later", ("k",))
    made = outcome("p", verdict, SHADOW, "E: x", 0.25)
    assert made == PolicyOutcome("p", verdict, SHADOW, "E: x", 0.25)
    assert list(vars(made)) == [f.name for f in fields(PolicyOutcome)]
    assert hash(made) == hash(PolicyOutcome("p", verdict, SHADOW, "E: x", 0.25))


def test_a_send_read_is_history_entry_s_own() -> None:
    at = 1_773_144_000_123_457
    reads = SqlHistory._recipient_rows(
        "ann@example.org",
        [
            (send_kind(MessageClass.TRANSACTIONAL, False), "d2", None, None, "o", at),
            (send_kind(MessageClass.MARKETING, True), "d1", "c", "h", None, 7),
        ],
    )
    expected = [
        HistoryEntry(
            "d1",
            "ann@example.org",
            "c",
            MessageClass.MARKETING,
            "h",
            datetime.fromtimestamp(7 / 1e6, UTC),
            True,
            None,
        ),
        HistoryEntry(
            "d2",
            "ann@example.org",
            None,
            MessageClass.TRANSACTIONAL,
            None,
            datetime.fromtimestamp(at / 1e6, UTC),
            False,
            "o",
        ),
    ]
    assert list(reads.history) == expected
    for entry in reads.history:
        assert list(vars(entry)) == [f.name for f in fields(HistoryEntry)]


def test_a_decision_combines_as_combine_does() -> None:
    rng = random.Random(3)
    kinds = [
        Verdict.forward("f"),
        Verdict.hold("h"),
        Verdict.drop("d"),
        *(Verdict.delay(T0 + timedelta(minutes=m), f"d{m}") for m in (5, 1, 5, 9)),
    ]
    for _ in range(2000):
        outcomes = [
            PolicyOutcome(f"p{i}", rng.choice(kinds), rng.choice([ENFORCE, ENFORCE, SHADOW]))
            for i in range(rng.randrange(7))
        ]
        decision = Decision.of(outcomes)
        expected = combine(o.verdict for o in outcomes if o.mode is ENFORCE)
        assert decision.verdict is expected or (decision.verdict == expected == Verdict.forward())
        assert decision.outcomes == tuple(outcomes)
