"""Each built-in policy's logic against a real SQLite store and a fake clock, through the
harness plugin authors use (`sendguard.testing.PolicyHarness`)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from importlib.metadata import EntryPoint, entry_points
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError
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

from sendguard import policy as policy_module
from sendguard.content import content_hash
from sendguard.message import Delivery, MessageClass, Requirement
from sendguard.policy import PolicyContext, PolicyLoadError, PolicyOptions, load_policy_class
from sendguard.store.base import Approval, EventType
from sendguard.testing import FakeClock, PolicyHarness, make_delivery
from sendguard.verdict import Action, Verdict
from tests.unit.conftest import T0, Harness

ANN = "ann@example.org"
# frequency -------------------------------------------------------------------------------------
DAY = timedelta(days=1)


async def test_cap_delays_to_the_exact_moment_the_window_opens(harness: Harness) -> None:
    h = await harness(FrequencyPolicy, FrequencyOptions(caps=[Cap(limit=2, window=DAY)]))
    await h.sent(ANN, at=T0 - timedelta(hours=20))
    v = await h.evaluate(make_delivery(ANN))
    assert v.action is Action.FORWARD
    await h.sent(ANN, at=T0 - timedelta(hours=2))
    v = await h.evaluate(make_delivery(ANN))
    assert v.action is Action.DELAY and v.until == T0 + timedelta(hours=4)
    # at that moment the oldest send leaves the window: exactly then it may go
    v = await h.evaluate(make_delivery(ANN), at=T0 + timedelta(hours=4))
    assert v.action is Action.FORWARD
    v = await h.evaluate(make_delivery(ANN), at=T0 + timedelta(hours=4) - timedelta(microseconds=1))
    assert v.action is Action.DELAY


async def test_cap_past_max_delay_drops_and_transactional_is_exempt(harness: Harness) -> None:
    # options as the config gives them: validated by the policy's Options model
    h = await harness(FrequencyPolicy, {"caps": [{"limit": 1, "window": "30d"}], "max_delay": "7d"})
    await h.sent(ANN, at=T0 - DAY)
    v = await h.evaluate(make_delivery(ANN))
    assert v.action is Action.DROP and "max_delay" in v.reason
    tx = make_delivery(ANN, message_class=MessageClass.TRANSACTIONAL)
    assert (await h.evaluate(tx)).action is Action.FORWARD


async def test_transactional_sends_do_not_fill_marketing_caps(harness: Harness) -> None:
    h = await harness(FrequencyPolicy, FrequencyOptions(caps=[Cap(limit=1, window=DAY)]))
    await h.sent(ANN, at=T0 - timedelta(hours=1), message_class=MessageClass.TRANSACTIONAL)
    assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD


async def test_campaign_and_domain_scopes(harness: Harness) -> None:
    h = await harness(
        FrequencyPolicy,
        FrequencyOptions(
            caps=[
                Cap(scope="campaign", limit=1, window=DAY),
                Cap(scope="domain", limit=2, window=DAY),
            ]
        ),
    )
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


async def test_quiet_hours_use_header_then_fact_then_default(harness: Harness) -> None:
    h = await harness(FrequencyPolicy, FrequencyOptions(caps=[], quiet_hours=QUIET))
    now = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)  # 22:00 Berlin, 16:00 New York
    h.clock.set(now)
    v = await h.evaluate(make_delivery(ANN))
    assert v.action is Action.DELAY and v.until == datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
    ny = make_delivery(ANN, timezone="America/New_York")
    assert (await h.evaluate(ny)).action is Action.FORWARD
    await h.fact("timezone", "America/New_York", contact=ANN)
    assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
    default = await harness(FrequencyPolicy, FrequencyOptions(caps=[]))
    assert (
        await default.evaluate(make_delivery("z@example.org"), at=now)
    ).action is Action.FORWARD  # off by default


# repetition ------------------------------------------------------------------------------------
async def test_repetition_by_campaign_and_by_normalised_content(harness: Harness) -> None:
    h = await harness(
        RepetitionPolicy,
        RepetitionOptions(limit=2, window=timedelta(days=30), match=("campaign", "content")),
    )
    body = b"Subject: Offer\r\n\r\nHi Ann,\r\nGet 20% off: https://shop.example/deal?utm_source=x&id=7\r\n"
    await h.sent(ANN, at=T0 - DAY, campaign="deal", content=body)
    assert (await h.evaluate(make_delivery(ANN, campaign="deal"))).action is Action.FORWARD
    await h.sent(ANN, at=T0 - DAY, campaign="deal", content=body)
    v = await h.evaluate(make_delivery(ANN, campaign="deal"))
    assert v.action is Action.DROP and "campaign deal 2 times" in v.reason
    # the same offer, other campaign name, other greeting and tracking: still a repeat
    raw = (
        b"Subject: Offer\r\n\r\nHello Ann Smith!\r\nGet 20%   off: "
        b"https://shop.example/deal?id=7&utm_campaign=y&fbclid=abc\r\n"
    )
    delivery = h.delivery(ANN, campaign="renamed", content=raw)
    v = await h.evaluate(delivery)
    assert v.action is Action.DROP and "this content" in v.reason
    assert (
        await h.evaluate(make_delivery(ANN, campaign="deal"), at=T0 + timedelta(days=30))
    ).action is Action.FORWARD


def test_content_hash_ignores_what_changes_per_recipient() -> None:
    a = b"Subject: Sale\r\n\r\nHi Ann,\r\nSee https://x.example/s?utm_source=a&p=1\r\n"
    b = b"Subject: Sale\r\n\r\nDear Bob\r\nSee  https://x.example/s?p=1&utm_source=b\r\n"
    c = b"Subject: Sale\r\n\r\nHi Ann,\r\nSee https://x.example/s?p=2\r\n"
    assert content_hash(a) == content_hash(b) != content_hash(c)


# fatigue ---------------------------------------------------------------------------------------
async def test_fatigue_throttles_sunsets_and_engagement_restores(harness: Harness) -> None:
    h = await harness(
        FatiguePolicy,
        FatigueOptions(throttle_after=2, sunset_after=4, throttle_window=timedelta(days=7)),
    )
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
async def test_suppression_drops_marketing_not_transactional(
    harness: Harness, kind: EventType
) -> None:
    h = await harness(FatiguePolicy)
    await h.event(kind, "Ann@Example.org", at=T0 - DAY)
    v = await h.evaluate(make_delivery(ANN))
    assert v.action is Action.DROP and kind.value in v.reason
    tx = make_delivery(ANN, message_class=MessageClass.TRANSACTIONAL)
    assert (await h.evaluate(tx)).action is Action.FORWARD


# context ---------------------------------------------------------------------------------------
async def test_context_premises(harness: Harness) -> None:
    h = await harness(
        ContextPolicy, ContextOptions(max_wait=timedelta(hours=24), on_timeout="hold")
    )
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


async def test_context_stale_data(harness: Harness) -> None:
    h = await harness(
        ContextPolicy, ContextOptions(max_data_age=timedelta(hours=24), on_stale="drop")
    )
    fresh = make_delivery(ANN, data_as_of=T0 - timedelta(hours=23))
    stale = make_delivery(ANN, data_as_of=T0 - timedelta(hours=25))
    assert (await h.evaluate(fresh)).action is Action.FORWARD
    v = await h.evaluate(stale)
    assert v.action is Action.DROP and "older than max_data_age 1d" in v.reason


# human_hold ------------------------------------------------------------------------------------
async def test_human_hold_rules(harness: Harness) -> None:
    h = await harness(
        HumanHoldPolicy,
        HumanHoldOptions(
            sensitive_recipients=["@gov.example"], max_blast=2, blast_window=timedelta(hours=1)
        ),
    )
    assert (await h.evaluate(make_delivery(ANN, campaign="new"))).action is Action.HOLD
    await h.campaign("new", Approval.APPROVED, by="ana")
    assert (await h.evaluate(make_delivery(ANN, campaign="new"))).action is Action.FORWARD
    await h.campaign("bad", Approval.REJECTED, by="ana")
    assert (await h.evaluate(make_delivery(ANN, campaign="bad"))).action is Action.DROP
    v = await h.evaluate(make_delivery("pm@gov.example"))
    assert v.action is Action.HOLD and "sensitive" in v.reason
    approved = Delivery(**{**make_delivery(ANN, campaign="x").__dict__, "approved_by": "ana"})
    assert (await h.evaluate(approved)).action is Action.FORWARD


async def test_human_hold_patterns_and_blast(harness: Harness) -> None:
    no_campaigns = await harness(
        HumanHoldPolicy,
        HumanHoldOptions(hold_unapproved_campaigns=False, patterns=[r"free\s+money"], max_blast=2),
    )
    raw = b"Subject: Hello\r\nContent-Type: text/plain\r\n\r\nGet FREE   money now\r\n"
    v = await no_campaigns.evaluate(no_campaigns.delivery(ANN, content=raw))
    assert v.action is Action.HOLD and "free" in v.reason
    blast = await harness(
        HumanHoldPolicy, HumanHoldOptions(hold_unapproved_campaigns=False, max_blast=2)
    )
    for i in range(2):
        await blast.sent(f"r{i}@example.org", campaign="blast")
    v = await blast.evaluate(make_delivery(ANN, campaign="blast"))
    assert v.action is Action.HOLD and "max_blast 2" in v.reason
    later = T0 + timedelta(hours=2)
    assert (
        await blast.evaluate(make_delivery(ANN, campaign="blast"), at=later)
    ).action is Action.FORWARD


def test_clock_is_injectable() -> None:
    clock = FakeClock(T0)
    assert clock.advance(DAY) == T0 + DAY


# the harness and the options contract ----------------------------------------------------------
BUILTINS = sorted(
    (
        ep
        for ep in entry_points(group="sendguard.policies")
        if ep.value.startswith("sendguard_plugins.")
    ),
    key=lambda ep: ep.name,
)


@pytest.mark.parametrize("entry", BUILTINS, ids=[ep.name for ep in BUILTINS])
def test_builtin_options_forbid_unknown_keys_and_are_frozen(entry: EntryPoint) -> None:
    policy_class = entry.load()
    assert issubclass(policy_class.Options, PolicyOptions)
    with pytest.raises(ValidationError, match="colour"):
        PolicyHarness(policy_class, {"colour": "red"})
    with pytest.raises(ValidationError, match="frozen"):
        policy_class.Options().colour = "red"


class LaxOptions(BaseModel):
    limit: int = 1


class LaxPolicy:
    """A policy whose options would swallow a misspelt key."""

    Options = LaxOptions

    def __init__(self, options: LaxOptions) -> None:
        self.options = options

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        return Verdict.forward()


def test_a_policy_whose_options_allow_unknown_keys_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = EntryPoint("lax", f"{__name__}:LaxPolicy", policy_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(policy_module, "installed_policies", lambda: {"lax": entry})
    with pytest.raises(PolicyLoadError, match="must forbid unknown keys"):
        load_policy_class("lax")


async def test_harness_needs_async_with() -> None:
    h = PolicyHarness(FatiguePolicy)
    with pytest.raises(RuntimeError, match="async with"):
        await h.evaluate(make_delivery(ANN))
    async with h:
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
