"""Each built-in policy's logic through the public `PolicyHarness`: a real SQLite store and a
fake clock, as a plugin author would test their own policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel
from sendguard_plugins.context import ContextOptions, ContextPolicy
from sendguard_plugins.fatigue import FatigueOptions, FatiguePolicy
from sendguard_plugins.frequency import (
    Cap,
    FrequencyOptions,
    FrequencyPolicy,
    QuietHours,
    quiet_end,
)
from sendguard_plugins.human_hold import HumanHoldOptions, HumanHoldPolicy
from sendguard_plugins.repetition import RepetitionOptions, RepetitionPolicy

from sendguard import offload
from sendguard.approvals import Approval
from sendguard.content import content_hash
from sendguard.events import Event, EventType
from sendguard.message import Match, MessageClass, OnTimeout, Requirement
from sendguard.offload import LARGE
from sendguard.policy import HonoursSuppressions, Policy
from sendguard.suppressions import Effect, apply_event
from sendguard.testing import FakeClock, PolicyHarness, make_delivery
from sendguard.verdict import Action

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ANN = "ann@example.org"
DAY = timedelta(days=1)


P = TypeVar("P", bound=Policy)


def harness(policy_class: type[P], options: BaseModel) -> PolicyHarness[P]:
    """The policy over a fresh store, its clock at T0."""
    return PolicyHarness(policy_class, options, clock=FakeClock(T0))


def body(text: str) -> bytes:
    return f"Subject: Offer\r\n\r\n{text}\r\n".encode()


# frequency -------------------------------------------------------------------------------------
async def test_cap_delays_to_the_exact_moment_the_window_opens() -> None:
    async with harness(FrequencyPolicy, FrequencyOptions(caps=[Cap(limit=2, window=DAY)])) as h:
        await h.sent(ANN, at=T0 - timedelta(hours=20))
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
        await h.sent(ANN, at=T0 - timedelta(hours=2))
        v = await h.evaluate(make_delivery(ANN))
        assert v.action is Action.DELAY and v.until == T0 + timedelta(hours=4)
        # at that moment the oldest send leaves the window: exactly then it may go
        opens = T0 + timedelta(hours=4)
        assert (await h.evaluate(make_delivery(ANN), at=opens)).action is Action.FORWARD
        just_before = opens - timedelta(microseconds=1)
        assert (await h.evaluate(make_delivery(ANN), at=just_before)).action is Action.DELAY


async def test_cap_past_max_delay_drops_and_transactional_is_exempt() -> None:
    options = FrequencyOptions(
        caps=[Cap(limit=1, window=timedelta(days=30))], max_delay=timedelta(days=7)
    )
    async with harness(FrequencyPolicy, options) as h:
        await h.sent(ANN, at=T0 - DAY)
        v = await h.evaluate(make_delivery(ANN))
        assert v.action is Action.DROP and "max_delay" in v.reason
        tx = make_delivery(ANN, message_class=MessageClass.TRANSACTIONAL)
        assert (await h.evaluate(tx)).action is Action.FORWARD


async def test_transactional_sends_do_not_fill_marketing_caps() -> None:
    async with harness(FrequencyPolicy, FrequencyOptions(caps=[Cap(limit=1, window=DAY)])) as h:
        await h.sent(ANN, at=T0 - timedelta(hours=1), message_class=MessageClass.TRANSACTIONAL)
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD


async def test_campaign_and_domain_scopes() -> None:
    options = FrequencyOptions(
        caps=[
            Cap(scope="campaign", limit=1, window=DAY),
            Cap(scope="domain", limit=2, window=DAY),
        ]
    )
    async with harness(FrequencyPolicy, options) as h:
        await h.sent(ANN, at=T0 - timedelta(hours=1), campaign="a")
        assert (await h.evaluate(make_delivery(ANN, campaign="a"))).action is Action.DELAY
        assert (await h.evaluate(make_delivery(ANN, campaign="b"))).action is Action.FORWARD
        await h.sent("bob@EXAMPLE.org", at=T0 - timedelta(hours=1), campaign="z")
        v = await h.evaluate(make_delivery("cid@example.org", campaign="q"))
        assert v.action is Action.DELAY and "domain cap" in v.reason
        other = await h.evaluate(make_delivery("x@other.org", campaign="q"))
        assert other.action is Action.FORWARD


BERLIN = ZoneInfo("Europe/Berlin")
QUIET = QuietHours(start=time(21), end=time(8), default_timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 6, 1, 20, 59, tzinfo=BERLIN), datetime(2026, 6, 1, 20, 59, tzinfo=BERLIN)),
        (datetime(2026, 6, 1, 21, 0, tzinfo=BERLIN), datetime(2026, 6, 2, 8, 0, tzinfo=BERLIN)),
        (datetime(2026, 6, 1, 23, 30, tzinfo=BERLIN), datetime(2026, 6, 2, 8, 0, tzinfo=BERLIN)),
        (datetime(2026, 6, 2, 3, 0, tzinfo=BERLIN), datetime(2026, 6, 2, 8, 0, tzinfo=BERLIN)),
        (datetime(2026, 6, 2, 8, 0, tzinfo=BERLIN), datetime(2026, 6, 2, 8, 0, tzinfo=BERLIN)),
        # the night the clocks go forward (29 March 2026, 02:00 -> 03:00): 8:00 is CEST
        (datetime(2026, 3, 28, 22, 0, tzinfo=BERLIN), datetime(2026, 3, 29, 8, 0, tzinfo=BERLIN)),
        # and back (25 October 2026): the night is an hour longer, still ends at 8:00 CET
        (datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN), datetime(2026, 10, 25, 8, 0, tzinfo=BERLIN)),
    ],
)
def test_quiet_hours_across_midnight_and_dst(local: datetime, expected: datetime) -> None:
    got = quiet_end(local.astimezone(UTC), BERLIN, QUIET)
    assert got == expected.astimezone(UTC)
    assert got.astimezone(BERLIN).hour == expected.hour


def test_quiet_hours_within_one_day_and_dst_gap_end() -> None:
    lunch = QuietHours(start=time(12), end=time(13))
    at = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    assert quiet_end(at, ZoneInfo("UTC"), lunch) == datetime(2026, 6, 1, 13, tzinfo=UTC)
    gap = QuietHours(start=time(1), end=time(2, 30))  # 02:30 does not exist on 29 March
    got = quiet_end(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), BERLIN, gap)  # 01:30 CET
    assert got > datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert got.astimezone(BERLIN).time() >= time(3)


async def test_quiet_hours_use_header_then_fact_then_default() -> None:
    now = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)  # 22:00 Berlin, 16:00 New York
    async with harness(FrequencyPolicy, FrequencyOptions(caps=[], quiet_hours=QUIET)) as h:
        v = await h.evaluate(make_delivery(ANN), at=now)
        assert v.action is Action.DELAY and v.until == datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
        ny = make_delivery(ANN, timezone="America/New_York")
        assert (await h.evaluate(ny, at=now)).action is Action.FORWARD
        await h.fact("timezone", "America/New_York", contact=ANN, observed_at=now)
        assert (await h.evaluate(make_delivery(ANN), at=now)).action is Action.FORWARD
        off = FrequencyPolicy(FrequencyOptions(caps=[]))  # quiet hours are off by default
        v = await off.evaluate(make_delivery("z@example.org"), h.context(now))
        assert v.action is Action.FORWARD


async def test_a_forward_names_the_caps_and_the_recipients_own_quiet_hours() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # 14:00 Berlin, 08:00 New York
    options = FrequencyOptions(quiet_hours=QUIET)
    async with harness(FrequencyPolicy, options) as h:
        for zone in ("America/New_York", "Europe/Berlin", "America/New_York"):
            v = await h.evaluate(make_delivery(ANN, timezone=zone), at=now)
            assert v.reason == (
                "within every cap (1 per 1 day, 3 per 7 days); outside quiet hours"
                f" {QUIET.start:%H:%M}-{QUIET.end:%H:%M} {zone}"
            )
        assert (await h.evaluate(make_delivery(ANN), at=now)).reason.endswith(
            f" {QUIET.default_timezone}"
        )


# repetition ------------------------------------------------------------------------------------
async def test_repetition_by_campaign_and_by_normalised_content() -> None:
    options = RepetitionOptions(limit=2, window=timedelta(days=30), match=("campaign", "content"))
    async with harness(RepetitionPolicy, options) as h:
        text = "Hi Ann,\r\nGet 20% off: https://shop.example/deal?utm_source=x&id=7\r\n"
        await h.sent(ANN, at=T0 - DAY, campaign="deal", content=body(text))
        assert (await h.evaluate(make_delivery(ANN, campaign="deal"))).action is Action.FORWARD
        await h.sent(ANN, at=T0 - DAY, campaign="deal", content=body(text))
        v = await h.evaluate(make_delivery(ANN, campaign="deal"))
        assert v.action is Action.DROP and "campaign deal 2 times" in v.reason
        # the same offer, other campaign name, other greeting and tracking: still a repeat
        raw = (
            b"Subject: Offer\r\n\r\nHello Ann Smith!\r\nGet 20%   off: "
            b"https://shop.example/deal?id=7&utm_campaign=y&fbclid=abc\r\n"
        )
        v = await h.evaluate(h.delivery(ANN, content=raw, campaign="renamed"))
        assert v.action is Action.DROP and "this content" in v.reason
        later = T0 + timedelta(days=30)
        assert (
            await h.evaluate(make_delivery(ANN, campaign="deal"), at=later)
        ).action is Action.FORWARD


def test_content_hash_ignores_what_changes_per_recipient() -> None:
    a = b"Subject: Sale\r\n\r\nHi Ann,\r\nSee https://x.example/s?utm_source=a&p=1\r\n"
    b = b"Subject: Sale\r\n\r\nDear Bob\r\nSee  https://x.example/s?p=1&utm_source=b\r\n"
    # A per-recipient token in a URL's path or query (session 11: a URL reads as [link]; where
    # it goes is the links fingerprint's), and a name in the subject.
    token = b"Subject: Bob, sale\r\n\r\nHi Bob,\r\nSee https://x.example/s/b0b-4711?upn=b\r\n"
    c = b"Subject: Sale\r\n\r\nHi Ann,\r\nSee it: https://x.example/s?p=1\r\n"
    assert content_hash(a) == content_hash(b) == content_hash(token) != content_hash(c)


# fatigue ---------------------------------------------------------------------------------------
async def test_fatigue_throttles_sunsets_and_engagement_restores() -> None:
    options = FatigueOptions(throttle_after=2, sunset_after=4, throttle_window=timedelta(days=7))
    async with harness(FatiguePolicy, options) as h:
        for days in (30, 20):
            await h.sent(ANN, at=T0 - timedelta(days=days))
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
        await h.sent(ANN, at=T0 - timedelta(days=2))
        v = await h.evaluate(make_delivery(ANN))
        assert v.action is Action.DELAY and v.until == T0 + timedelta(days=5)
        await h.sent(ANN, at=T0 - timedelta(days=1))
        v = await h.evaluate(make_delivery(ANN))
        assert v.action is Action.DROP and "sunset" in v.reason
        await h.event(EventType.CLICK, ANN, at=T0 - timedelta(hours=1))
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD


@pytest.mark.parametrize("kind", [EventType.UNSUBSCRIBE, EventType.BOUNCE, EventType.COMPLAINT])
async def test_suppression_drops_marketing_not_transactional(kind: EventType) -> None:
    async with harness(FatiguePolicy, FatigueOptions()) as h:
        event = Event(kind, "Ann@Example.org", T0 - timedelta(days=3000))
        assert await apply_event(h.store, event, T0) is Effect.ADDED
        v = await h.evaluate(make_delivery(ANN))
        assert v.action is Action.DROP and kind.value in v.reason and "suppressed" in v.reason
        tx = make_delivery(ANN, message_class=MessageClass.TRANSACTIONAL)
        assert (await h.evaluate(tx)).action is Action.FORWARD
        assert await apply_event(h.store, Event(kind, ANN, T0), T0) is Effect.ALREADY
        lift = Event(EventType.RESUBSCRIBE, "ANN@example.org", T0)
        assert await apply_event(h.store, lift, T0) is Effect.LIFTED
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
        assert await apply_event(h.store, lift, T0) is Effect.NOT_SUPPRESSED
        actions = [(e.actor, e.action, e.target) for e in await h.store.audit()]
        assert actions == [
            ("events", "lift", f"suppression:{ANN}"),
            ("events", "suppress", f"suppression:{ANN}"),
        ]


@pytest.mark.parametrize(
    "exempt",
    [[], [MessageClass.TRANSACTIONAL], [MessageClass.MARKETING], list(MessageClass)],
)
async def test_fatigue_declares_exactly_the_classes_it_drops_for_a_suppression(
    exempt: list[MessageClass],
) -> None:
    # What the timeline, check-config and the start log say comes from `suppressed_classes`.
    async with harness(FatiguePolicy, FatigueOptions(exempt_classes=exempt)) as h:
        assert isinstance(h.policy, HonoursSuppressions)
        await apply_event(h.store, Event(EventType.UNSUBSCRIBE, ANN, T0), T0)
        dropped = {
            c
            for c in MessageClass
            if (await h.evaluate(make_delivery(ANN, message_class=c))).action is Action.DROP
        }
        assert h.policy.suppressed_classes() == dropped == set(MessageClass) - set(exempt)


async def test_soft_bounce_and_engagement_do_not_suppress() -> None:
    async with harness(FatiguePolicy, FatigueOptions()) as h:
        bounce = Event(EventType.BOUNCE, ANN, T0)
        assert await apply_event(h.store, bounce, T0, soft_bounce=True) is None
        assert await apply_event(h.store, Event(EventType.OPEN, ANN, T0), T0) is None
        assert await h.store.get_suppression(ANN) is None


async def test_fatigue_custom_engagement_and_lookback() -> None:
    options = FatigueOptions(
        throttle_after=1,
        sunset_after=2,
        lookback=timedelta(days=60),
        engagement=("visit", "purchase"),
    )
    async with harness(FatiguePolicy, options) as h:
        assert h.policy.lookback().event_types == {"visit"}
        assert h.policy.lookback().history == timedelta(days=60)
        for days in (90, 80, 70):  # ignored sends older than the lookback do not count
            await h.sent(ANN, at=T0 - timedelta(days=days))
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
        await h.sent(ANN, at=T0 - timedelta(days=10))
        await h.sent(ANN, at=T0 - timedelta(days=9))
        assert (await h.evaluate(make_delivery(ANN))).action is Action.DROP
        await h.event(EventType.CLICK, ANN, at=T0 - DAY)  # not engagement here
        assert (await h.evaluate(make_delivery(ANN))).action is Action.DROP
        await h.event("visit", ANN, at=T0 - DAY)
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"engagement": ["open", "unsubscribe"]}, "not an engagement type"),
        ({"engagement": ["Visit Page"]}, "not an event type name"),
        ({"lookback": "1d", "throttle_window": "7d"}, "lookback must not be shorter"),
    ],
)
def test_fatigue_options_refuse_what_cannot_work(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FatigueOptions.model_validate(options)


# context ---------------------------------------------------------------------------------------
async def test_context_premises() -> None:
    options = ContextOptions(max_wait=timedelta(hours=24), on_timeout="hold")
    async with harness(ContextPolicy, options) as h:
        needs = (Requirement("meeting:1:status", "completed"),)
        delivery = make_delivery(ANN, requires=needs, at=T0)
        v = await h.evaluate(delivery)
        assert v.action is Action.DELAY and v.until == T0 + timedelta(hours=24)
        v = await h.evaluate(delivery, at=T0 + timedelta(hours=24))
        assert v.action is Action.HOLD and "no such fact came" in v.reason
        short = make_delivery(ANN, requires=needs, at=T0, wait=timedelta(hours=1))
        assert (await h.evaluate(short)).until == T0 + timedelta(hours=1)
        await h.fact("meeting:1:status", "no_show")
        assert (await h.evaluate(delivery)).action is Action.DROP
        await h.fact("meeting:1:status", "completed", contact=ANN)
        assert (await h.evaluate(delivery)).action is Action.FORWARD


async def test_context_stale_data() -> None:
    options = ContextOptions(max_data_age=timedelta(hours=24), on_stale="drop")
    async with harness(ContextPolicy, options) as h:
        fresh = make_delivery(ANN, data_as_of=T0 - timedelta(hours=23))
        stale = make_delivery(ANN, data_as_of=T0 - timedelta(hours=25))
        assert (await h.evaluate(fresh)).action is Action.FORWARD
        v = await h.evaluate(stale)
        assert v.action is Action.DROP and "older than max_data_age 1 day" in v.reason


async def test_context_fact_age_and_after() -> None:
    async with harness(ContextPolicy, ContextOptions(max_fact_age=timedelta(hours=24))) as h:
        await h.fact("m:1:status", "completed", contact=ANN, observed_at=T0 - timedelta(days=7))
        needs = (Requirement("m:1:status", "completed"),)
        v = await h.evaluate(make_delivery(ANN, requires=needs, at=T0))
        assert v.action is Action.DELAY and "was observed at" in v.reason
        assert v.wakes_on == ("m:1:status",)
        await h.fact("m:1:status", "completed", contact=ANN, observed_at=T0 - timedelta(hours=2))
        fresh = make_delivery(ANN, requires=needs, at=T0)
        assert (await h.evaluate(fresh)).action is Action.FORWARD
        later = (Requirement("m:1:status", "completed", after=T0 - timedelta(hours=1)),)
        v = await h.evaluate(make_delivery(ANN, requires=later, at=T0))
        assert v.action is Action.DELAY
        no_age = ContextPolicy(ContextOptions(max_fact_age=None))
        await h.fact("m:2:status", "completed", observed_at=T0 - timedelta(days=300))
        old = make_delivery(ANN, requires=(Requirement("m:2:status", "completed"),), at=T0)
        assert (await no_age.evaluate(old, h.context())).action is Action.FORWARD


async def test_context_operators_pending_and_successors() -> None:
    async with harness(ContextPolicy, ContextOptions()) as h:
        await h.fact("m:1:status", "held")
        one_of = (Requirement("m:1:status", "completed|held", Match.ONE_OF),)
        not_cancelled = (Requirement("m:1:status", "cancelled", Match.NOT_EQUAL),)
        not_held = (Requirement("m:1:status", "held", Match.NOT_EQUAL),)
        for needs, action in ((one_of, Action.FORWARD), (not_cancelled, Action.FORWARD)):
            v = await h.evaluate(make_delivery(ANN, requires=needs, at=T0))
            assert v.action is action
        v = await h.evaluate(make_delivery(ANN, requires=not_held, at=T0))
        assert v.action is Action.DROP and "requires it not to be 'held'" in v.reason

        await h.fact("m:2:status", "rescheduled", superseded_by="m:3")
        needs = (Requirement("m:2:status", "completed"),)
        v = await h.evaluate(make_delivery(ANN, requires=needs, at=T0))
        assert v.action is Action.DELAY and "m:3:status=completed" in v.reason
        assert v.wakes_on == ("m:2:status", "m:3:status")
        await h.fact("m:3:status", "scheduled")
        v = await h.evaluate(make_delivery(ANN, requires=needs, at=T0))
        assert v.action is Action.DELAY and "still pending" in v.reason
        # A pending value the premise names is a value like any other.
        wants_scheduled = (Requirement("m:3:status", "scheduled"),)
        v = await h.evaluate(make_delivery(ANN, requires=wants_scheduled, at=T0))
        assert v.action is Action.FORWARD
        # A loop of successors ends at the last fact reached before it repeats.
        await h.fact("m:3:status", "completed", superseded_by="m:2")
        v = await h.evaluate(make_delivery(ANN, requires=needs, at=T0))
        assert v.action is Action.FORWARD


async def test_context_unless_and_timeouts() -> None:
    async with harness(ContextPolicy, ContextOptions(on_timeout="hold")) as h:
        unless = (Requirement("m:9:status", "no_show"),)
        quiet = make_delivery(
            ANN, unless=unless, at=T0, wait=timedelta(hours=6), on_timeout=OnTimeout.FORWARD
        )
        v = await h.evaluate(quiet)
        assert v.action is Action.DELAY and v.until == T0 + timedelta(hours=6)
        assert v.wakes_on == ("m:9:status",)
        v = await h.evaluate(quiet, at=T0 + timedelta(hours=6))
        assert v.action is Action.FORWARD and "no such fact came" in v.reason
        await h.fact("m:9:status", "no_show", observed_at=T0 + timedelta(hours=1))
        v = await h.evaluate(quiet, at=T0 + timedelta(hours=2))
        assert v.action is Action.DROP and "not sent when m:9:status=no_show" in v.reason
        await h.fact("m:9:status", "completed", observed_at=T0 + timedelta(hours=3))
        v = await h.evaluate(quiet, at=T0 + timedelta(hours=3))
        assert v.action is Action.FORWARD and "settled otherwise" in v.reason
        held = await h.evaluate(
            make_delivery(ANN, requires=(Requirement("x", "y"),), at=T0), at=T0 + DAY
        )
        assert held.action is Action.HOLD and held.wakes_on == ("x",)


async def test_context_campaign_premises() -> None:
    options = ContextOptions.model_validate(
        {
            "campaigns": {
                "onboarding": {
                    "requires": ["crm:{recipient}:stage=customer"],
                    "wait": "1h",
                    "on_timeout": "drop",
                }
            }
        }
    )
    async with harness(ContextPolicy, options) as h:
        delivery = make_delivery("Ann@Example.org", campaign="onboarding", at=T0)
        v = await h.evaluate(delivery)
        assert v.action is Action.DELAY and v.until == T0 + timedelta(hours=1)
        assert v.wakes_on == ("crm:ann@example.org:stage",)
        v = await h.evaluate(delivery, at=T0 + timedelta(hours=1))
        assert v.action is Action.DROP
        other = make_delivery(ANN, campaign="newsletter", at=T0)
        assert (await h.evaluate(other)).reason == "no premises"
    with pytest.raises(ValueError, match=r"requires\[0\]"):
        ContextOptions.model_validate({"campaigns": {"x": {"requires": ["nonsense"]}}})


async def test_context_override_by_a_reviewer_only() -> None:
    async with harness(ContextPolicy, ContextOptions()) as h:
        needs = (Requirement("m:1:status", "completed"),)
        overridden = replace(make_delivery(ANN, requires=needs, at=T0), override_by="ana")
        v = await h.evaluate(overridden)
        assert v.action is Action.FORWARD and v.reason == "override by ana: premises not checked"
        # Approving some other hold (or its expiry) is no override: the premises still count.
        approved = replace(overridden, override_by=None, approved_by="ana")
        assert (await h.evaluate(approved)).action is Action.DELAY


# human_hold ------------------------------------------------------------------------------------
async def test_human_hold_rules() -> None:
    options = HumanHoldOptions(
        sensitive_recipients=["@gov.example"], max_blast=2, blast_window=timedelta(hours=1)
    )
    async with harness(HumanHoldPolicy, options) as h:
        assert (await h.evaluate(make_delivery(ANN, campaign="new"))).action is Action.HOLD
        await h.campaign("new", Approval.APPROVED, by="ana")
        assert (await h.evaluate(make_delivery(ANN, campaign="new"))).action is Action.FORWARD
        await h.campaign("bad", Approval.REJECTED, by="ana")
        assert (await h.evaluate(make_delivery(ANN, campaign="bad"))).action is Action.DROP
        v = await h.evaluate(make_delivery("pm@gov.example"))
        assert v.action is Action.HOLD and "sensitive" in v.reason
        approved = replace(make_delivery(ANN, campaign="x"), approved_by="ana")
        assert (await h.evaluate(approved)).action is Action.FORWARD


async def test_human_hold_patterns_and_blast() -> None:
    options = HumanHoldOptions(
        hold_unapproved_campaigns=False, patterns=[r"free\s+money"], max_blast=2
    )
    async with harness(HumanHoldPolicy, options) as h:
        raw = b"Subject: Hello\r\nContent-Type: text/plain\r\n\r\nGet FREE   money now\r\n"
        v = await h.evaluate(h.delivery(ANN, content=raw))
        assert v.action is Action.HOLD and "free" in v.reason
        blast = HumanHoldPolicy(HumanHoldOptions(hold_unapproved_campaigns=False, max_blast=2))
        for i in range(2):
            await h.sent(f"r{i}@example.org", campaign="blast")
        v = await blast.evaluate(make_delivery(ANN, campaign="blast"), h.context())
        assert v.action is Action.HOLD and "max_blast 2" in v.reason
        later = h.context(T0 + timedelta(hours=2))
        assert (
            await blast.evaluate(make_delivery(ANN, campaign="blast"), later)
        ).action is Action.FORWARD


async def test_human_hold_patterns_in_a_large_message() -> None:
    # Above offload.LARGE the text is extracted in a worker process: the same verdicts.
    options = HumanHoldOptions(hold_unapproved_campaigns=False, patterns=[r"free\s+money"])
    filler = b"Nothing to see here, only a line of text.\r\n" * (2 * LARGE // 40)
    try:
        async with harness(HumanHoldPolicy, options) as h:
            hit = b"Subject: Hello\r\n\r\n" + filler + b"Get FREE   money now\r\n"
            v = await h.evaluate(h.delivery(ANN, content=hit))
            assert v.action is Action.HOLD and "free" in v.reason
            miss = b"Subject: Hello\r\n\r\n" + filler
            assert (await h.evaluate(h.delivery(ANN, content=miss))).action is Action.FORWARD
    finally:
        offload.close()


def test_clock_is_injectable() -> None:
    clock = FakeClock(T0)
    assert clock.advance(DAY) == T0 + DAY
