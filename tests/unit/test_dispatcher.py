"""The dispatcher against a real SQLite store, a fake clock and a scripted upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sendguard_plugins.schedule import ScheduleOptions, SchedulePolicy

from sendguard.config import DeliveryConfig
from sendguard.delivery.dispatcher import Dispatcher, backoff
from sendguard.delivery.upstream import Envelope
from sendguard.engine import Engine, PolicyBinding
from sendguard.errors import UpstreamError, UpstreamPermanent, UpstreamTransient
from sendguard.intake import Intake
from sendguard.message import DeliveryState
from sendguard.metrics import Metrics
from sendguard.policy import PolicyContext
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Verdict

S = DeliveryState


class ScriptedUpstream:
    name = "scripted"

    def __init__(self) -> None:
        self.results: list[UpstreamError | None] = []
        self.sent: list[Envelope] = []
        self.calls = 0

    async def send(self, envelope: Envelope, content: bytes) -> None:
        self.calls += 1
        result = self.results.pop(0) if self.results else None
        if result is not None:
            raise result
        self.sent.append(envelope)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Switch:
    """A policy that forwards until told to drop."""

    Options: ClassVar[type[BaseModel]] = BaseModel
    dropping = False

    def __init__(self, options: Any = None) -> None:
        pass

    async def evaluate(self, delivery: Any, ctx: PolicyContext) -> Verdict:
        return Verdict.drop("unsubscribed meanwhile") if Switch.dropping else Verdict.forward()


def test_backoff_doubles_and_caps() -> None:
    waits = [backoff(n, timedelta(minutes=1), timedelta(minutes=10)) for n in range(1, 7)]
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8, 10, 10)]
    assert backoff(500, timedelta(minutes=1), timedelta(hours=1)) == timedelta(hours=1)


class Rig:
    def __init__(self, store: SQLiteStore, clock: FakeClock, upstream: ScriptedUpstream) -> None:
        self.store, self.clock, self.upstream = store, clock, upstream
        config = DeliveryConfig(
            workers=2,
            min_backoff=timedelta(minutes=1),
            max_backoff=timedelta(minutes=4),
            max_lifetime=timedelta(minutes=10),
            poll_interval=timedelta(milliseconds=10),
        )
        metrics = Metrics()
        Switch.dropping = False
        engine = Engine(
            [
                PolicyBinding("schedule", SchedulePolicy(ScheduleOptions())),
                PolicyBinding("switch", Switch()),
            ],
            store,
            clock,
            metrics,
        )
        self.dispatcher = Dispatcher(store, engine, upstream, clock, config, metrics, "test")
        self.intake = Intake(engine, store, clock, metrics, {}, self.dispatcher.wake)

    async def send(self, *headers: str) -> str:
        raw = ("\r\n".join(["Subject: hi", *headers]) + "\r\n\r\nbody\r\n").encode()
        accepted = await self.intake.accept(raw, "s@example.com", ["r@example.org"], "test")
        return accepted.deliveries[0].id

    async def until(self, check: Callable[[], Any], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.005)

    async def state(self, delivery_id: str) -> DeliveryState:
        delivery = await self.store.get_delivery(delivery_id)
        assert delivery is not None
        return delivery.state


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "d.db")
    await store.open()
    rig = Rig(store, FakeClock(), ScriptedUpstream())
    task = asyncio.create_task(rig.dispatcher.run())
    yield rig
    await rig.dispatcher.stop()
    await task
    await store.close()


async def test_transient_errors_back_off_then_fail_past_max_lifetime(rig: Rig) -> None:
    rig.upstream.results = [UpstreamTransient("451 busy", code=451)] * 10
    delivery_id = await rig.send()
    start = rig.clock.now()

    async def deferred_after(calls: int) -> bool:
        return rig.upstream.calls >= calls and await rig.state(delivery_id) is S.DEFERRED

    await rig.until(lambda: deferred_after(1))
    d = await rig.store.get_delivery(delivery_id)
    assert d is not None and d.due_at == start + timedelta(minutes=1) and d.attempts == 1

    for expected_wait in (2, 4):
        rig.clock.set(d.due_at)  # exactly due: not a moment late, not early
        rig.dispatcher.wake()
        await rig.until(lambda n=d.attempts + 1: deferred_after(n))
        previous, d = d, await rig.store.get_delivery(delivery_id)
        assert d is not None and previous.due_at is not None
        assert d.due_at == previous.due_at + timedelta(minutes=expected_wait)

    rig.clock.set(d.due_at)  # attempt 4 fails; its retry (7m + 4m) would pass max_lifetime
    rig.dispatcher.wake()
    await rig.until(lambda: _is(rig, delivery_id, S.FAILED))
    reasons = [t.reason for t in await rig.store.transitions(delivery_id)]
    assert "max_lifetime" in reasons[-1]
    assert rig.upstream.sent == []


async def _is(rig: Rig, delivery_id: str, state: DeliveryState) -> bool:
    return await rig.state(delivery_id) is state


async def test_permanent_error_fails_at_once(rig: Rig) -> None:
    rig.upstream.results = [UpstreamPermanent("550 no such user", code=550)]
    delivery_id = await rig.send()
    await rig.until(lambda: _is(rig, delivery_id, S.FAILED))
    assert rig.upstream.calls == 1


async def test_delayed_delivery_is_judged_again_when_due(rig: Rig) -> None:
    due = rig.clock.now() + timedelta(hours=1)
    kept = await rig.send(f"X-Sendguard-Not-Before: {due.isoformat()}")
    assert await rig.state(kept) is S.DELAYED
    await asyncio.sleep(0.05)
    assert rig.upstream.calls == 0

    rig.clock.set(due)
    rig.dispatcher.wake()
    await rig.until(lambda: _is(rig, kept, S.SENT))
    assert [t.state for t in await rig.store.transitions(kept)] == [
        S.DELAYED,
        S.QUEUED,
        S.SENDING,
        S.SENT,
    ]

    # The world changes while the next one waits: it is dropped, never sent.
    dropped = await rig.send(f"X-Sendguard-Not-Before: {(due + timedelta(hours=1)).isoformat()}")
    Switch.dropping = True
    rig.clock.advance(timedelta(hours=1))
    rig.dispatcher.wake()
    await rig.until(lambda: _is(rig, dropped, S.DROPPED))
    assert len(rig.upstream.sent) == 1
    last = (await rig.store.transitions(dropped))[-1]
    assert last.reason == "switch: unsubscribed meanwhile"
