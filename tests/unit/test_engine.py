from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import structlog.testing
from pydantic import BaseModel
from sendguard_plugins.schedule import ScheduleOptions, SchedulePolicy

from sendguard.approvals import GlobalPause
from sendguard.engine import Engine, OnError, PolicyBinding, explain, plan
from sendguard.errors import StoreUnavailable
from sendguard.message import Delivery, DeliveryState
from sendguard.metrics import Metrics
from sendguard.phrasing import human_time
from sendguard.policy import PolicyContext
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock, make_delivery
from sendguard.verdict import Action, Mode, Verdict


class Scripted:
    """A policy whose behaviour the test chooses; `calls` counts its evaluations."""

    Options: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour
        self.calls = 0

    async def evaluate(self, delivery: Any, ctx: PolicyContext) -> Verdict:
        self.calls += 1
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if self.behaviour == "slow":
            await asyncio.sleep(10)
        result: Verdict = self.behaviour
        return result


def engine(store: SQLiteStore, *bindings: PolicyBinding, clock: FakeClock | None = None) -> Engine:
    return Engine(bindings, store, clock or FakeClock(), Metrics())


async def test_failing_policy_counts_as_its_on_error(store: SQLiteStore) -> None:
    boom = PolicyBinding("boom", Scripted(RuntimeError("bug")), on_error=OnError.HOLD)
    decision = await engine(store, boom).decide(make_delivery())
    assert decision.verdict.action is Action.HOLD
    assert decision.outcomes[0].error == "RuntimeError: bug"
    assert "policy boom failed" in explain(decision)

    lenient = PolicyBinding("boom", Scripted(RuntimeError("bug")), on_error=OnError.FORWARD)
    assert (await engine(store, lenient).decide(make_delivery())).verdict.action is Action.FORWARD


async def test_policy_over_budget_times_out(store: SQLiteStore) -> None:
    slow = PolicyBinding("slow", Scripted("slow"), budget=timedelta(milliseconds=20))
    decision = await engine(store, slow).decide(make_delivery())
    assert decision.verdict.action is Action.HOLD
    assert decision.outcomes[0].error == "timed out after 0.02s"


async def test_wrong_return_type_is_a_failure(store: SQLiteStore) -> None:
    odd = PolicyBinding("odd", Scripted("not a verdict"))
    decision = await engine(store, odd).decide(make_delivery())
    assert decision.verdict.action is Action.HOLD
    assert decision.outcomes[0].error is not None
    assert "TypeError" in decision.outcomes[0].error


async def test_store_failure_is_not_swallowed(store: SQLiteStore) -> None:
    down = PolicyBinding("down", Scripted(StoreUnavailable("gone")))
    with pytest.raises(StoreUnavailable):
        await engine(store, down).decide(make_delivery())


async def test_shadow_policy_is_recorded_and_counted_not_enforced(store: SQLiteStore) -> None:
    eng = engine(
        store,
        PolicyBinding("strict", Scripted(Verdict.drop("nope")), mode=Mode.SHADOW),
        PolicyBinding("ok", Scripted(Verdict.forward())),
    )
    decision = await eng.decide(make_delivery())
    assert decision.verdict.action is Action.FORWARD
    assert [o.mode for o in decision.outcomes] == [Mode.SHADOW, Mode.ENFORCE]
    text = eng._metrics.render().decode()
    assert 'sendguard_decisions_total{mode="shadow",policy="strict",verdict="drop"} 1.0' in text


async def test_plan_maps_verdicts_to_states(store: SQLiteStore) -> None:
    clock = FakeClock()
    later = clock.now() + timedelta(hours=1)
    eng = Engine(
        [PolicyBinding("schedule", SchedulePolicy(ScheduleOptions()))], store, clock, Metrics()
    )
    decision = await eng.decide(make_delivery(not_before=later))
    step = plan(decision, clock.now())
    assert (step.state, step.due_at) == (DeliveryState.DELAYED, later)
    assert step.reason == f"schedule: not before {human_time(later)}"

    clock.advance(timedelta(hours=1))
    decision = await eng.decide(make_delivery(not_before=later))
    step = plan(decision, clock.now())
    assert (step.state, step.due_at) == (DeliveryState.QUEUED, clock.now())


async def test_policy_errors_are_counted_per_policy_from_zero(store: SQLiteStore) -> None:
    eng = engine(
        store,
        PolicyBinding("boom", Scripted(RuntimeError("bug")), on_error=OnError.FORWARD),
        PolicyBinding("slow", Scripted("slow"), budget=timedelta(milliseconds=20)),
        PolicyBinding("fine", Scripted(Verdict.forward("ok"))),
    )
    await eng.decide(make_delivery())
    await eng.decide(make_delivery())
    text = eng._metrics.render().decode()
    assert 'sendguard_policy_errors_total{policy="boom"} 2.0' in text
    assert 'sendguard_policy_errors_total{policy="slow"} 2.0' in text
    assert 'sendguard_policy_errors_total{policy="fine"} 0.0' in text


async def test_a_forward_says_why_every_enforcing_policy_let_it_go(store: SQLiteStore) -> None:
    eng = engine(
        store,
        PolicyBinding("strict", Scripted(Verdict.drop("nope")), mode=Mode.SHADOW),
        PolicyBinding("caps", Scripted(Verdict.forward("within every cap (1 per 1 day)"))),
        PolicyBinding("review", Scripted(Verdict.forward("campaign spring approved by maria"))),
    )
    decision = await eng.decide(make_delivery())
    assert explain(decision) == (
        "caps: within every cap (1 per 1 day); review: campaign spring approved by maria"
    )
    assert explain(await engine(store).decide(make_delivery())) == "no policy is configured"


async def test_global_pause_holds_every_delivery_without_expiry(store: SQLiteStore) -> None:
    now = FakeClock().now()
    holding = PolicyBinding("fake", Scripted(Verdict.hold("review it")))
    run = Engine((holding,), store, FakeClock(), Metrics(), hold_expiry=timedelta(days=7))
    assert run.plan(await run.decide(make_delivery()), now).hold_origin == "policy"
    await store.set_pause(GlobalPause(True, now, "ops", "incident"))
    decision = await run.decide(make_delivery())
    assert [o.policy for o in decision.outcomes] == ["fake", "global-pause"]
    assert decision.outcomes[-1].verdict.reason == "sending is paused by ops: incident"
    step = run.plan(decision, now)
    # held by a policy too, but the pause keeps it from expiring while nobody can review
    assert (step.state, step.hold_origin, step.due_at) == (DeliveryState.HELD, "pause", None)


async def test_an_engine_that_does_not_record_judges_alike_and_counts_nothing(
    store: SQLiteStore,
) -> None:
    """`record=False` (the what-if replay): the same decision, no log line, no metric."""
    bindings = (
        PolicyBinding("strict", Scripted(Verdict.drop("nope")), mode=Mode.SHADOW),
        PolicyBinding("boom", Scripted(RuntimeError("bug")), on_error=OnError.FORWARD),
        PolicyBinding(
            "late", Scripted(Verdict.delay(FakeClock().now() + timedelta(hours=1), "full"))
        ),
    )
    quiet = Engine(bindings, store, FakeClock(), Metrics(), record=False)
    loud = engine(store, *bindings)
    delivery = make_delivery()
    with structlog.testing.capture_logs() as logs:
        judged = await quiet.decide(delivery)
    assert [e["event"] for e in logs] == ["policy failed"]  # a plugin's bug is still logged
    expected = await loud.decide(delivery)
    assert [(o.policy, o.verdict, o.mode, o.error) for o in judged.outcomes] == [
        (o.policy, o.verdict, o.mode, o.error) for o in expected.outcomes
    ]
    assert judged.verdict == expected.verdict
    text = quiet._metrics.render().decode()
    assert 'sendguard_decisions_total{mode="shadow",policy="strict",verdict="drop"} 0.0' in text
    assert 'sendguard_policy_errors_total{policy="boom"} 0.0' in text
    assert 'sendguard_policy_duration_seconds_count{policy="late"} 0.0' in text
    loud_text = loud._metrics.render().decode()
    assert 'sendguard_policy_errors_total{policy="boom"} 1.0' in loud_text


class Sleepy:
    """A policy that takes `seconds` (awaiting, as one reading a remote store would)."""

    Options: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def evaluate(self, delivery: Any, ctx: PolicyContext) -> Verdict:
        await asyncio.sleep(self.seconds)
        return Verdict.forward("rested")


async def test_each_policy_is_timed_and_observed_as_its_own(store: SQLiteStore) -> None:
    eng = engine(
        store,
        PolicyBinding("quick", Scripted(Verdict.forward("ok"))),
        PolicyBinding("sleepy", Sleepy(0.05)),
        PolicyBinding("after", Scripted(Verdict.forward("ok"))),
    )
    decision = await eng.decide(make_delivery())
    quick, sleepy, after = decision.outcomes
    assert sleepy.seconds >= 0.05
    assert quick.seconds < 0.05 and after.seconds < 0.05
    text = eng._metrics.render().decode()
    for name in ("quick", "sleepy", "after"):
        assert f'sendguard_policy_duration_seconds_count{{policy="{name}"}} 1.0' in text
    assert 'sendguard_policy_duration_seconds_bucket{le="0.025",policy="sleepy"} 0.0' in text
    assert 'sendguard_policy_duration_seconds_bucket{le="0.025",policy="quick"} 1.0' in text


async def test_a_reload_counts_verdicts_under_the_new_mode(store: SQLiteStore) -> None:
    eng = engine(store, PolicyBinding("strict", Scripted(Verdict.drop("nope"))))
    await eng.decide(make_delivery())
    eng.reconfigure(
        [PolicyBinding("strict", Scripted(Verdict.drop("nope")), mode=Mode.SHADOW)], None
    )
    decision = await eng.decide(make_delivery())
    assert decision.verdict.action is Action.FORWARD
    text = eng._metrics.render().decode()
    assert 'sendguard_decisions_total{mode="enforce",policy="strict",verdict="drop"} 1.0' in text
    assert 'sendguard_decisions_total{mode="shadow",policy="strict",verdict="drop"} 1.0' in text


async def test_the_explanation_is_worked_out_once(store: SQLiteStore) -> None:
    eng = engine(store, PolicyBinding("ok", Scripted(Verdict.forward("fine"))))
    decision = await eng.decide(make_delivery())
    assert explain(decision) == "ok: fine"
    assert plan(decision, FakeClock().now()).reason is explain(decision)


class AwaitsForever:
    """A policy stuck on something it awaits (a slow store read); says how it was stopped."""

    def __init__(self) -> None:
        self.awaited: asyncio.Future[None] | None = None
        self.stopped_by = ""

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        self.awaited = asyncio.get_running_loop().create_future()
        try:
            await self.awaited
        except asyncio.CancelledError:
            self.stopped_by = "cancelled"
            await asyncio.sleep(0)  # cleaning up may await, as asyncpg does
            raise
        except GeneratorExit:
            self.stopped_by = "closed"
            raise
        return Verdict.forward()


async def test_a_policy_over_budget_is_cancelled_as_a_task_would_be(store: SQLiteStore) -> None:
    """What the policy awaits is cancelled and it sees CancelledError, so a store read under
    it can clean up (asyncpg cancels the query on the server and keeps the connection usable)."""
    stuck = AwaitsForever()
    slow = PolicyBinding("stuck", stuck, budget=timedelta(milliseconds=20))
    decision = await engine(store, slow).decide(make_delivery())
    assert decision.outcomes[0].error == "timed out after 0.02s"
    assert stuck.awaited is not None and stuck.awaited.cancelled()
    assert stuck.stopped_by == "cancelled"
