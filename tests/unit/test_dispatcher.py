"""The dispatcher against a real SQLite store, a fake clock and a scripted upstream."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sendguard_plugins.schedule import ScheduleOptions, SchedulePolicy

from sendguard.config import DeliveryOptions
from sendguard.deliveries import DeliveryQuery
from sendguard.delivery.dispatcher import Dispatcher, backoff
from sendguard.delivery.upstream import Envelope
from sendguard.engine import Engine, PolicyBinding
from sendguard.errors import (
    StoreUnavailable,
    UpstreamError,
    UpstreamPermanent,
    UpstreamTransient,
)
from sendguard.intake import Intake
from sendguard.message import Delivery, DeliveryState
from sendguard.metrics import Metrics
from sendguard.policy import PolicyContext
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Verdict

S = DeliveryState
MINUTE = timedelta(minutes=1)


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


class Draw(random.Random):
    """A random source that always draws `value`: backoff jitter at a known point."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_doubles_and_caps_with_jitter_in_the_upper_half() -> None:
    low, high = timedelta(minutes=1), timedelta(minutes=10)
    floors = [backoff(n, low, high, 0.0) for n in range(1, 7)]
    ceilings = [backoff(n, low, high, 1.0) for n in range(1, 7)]
    assert floors == [timedelta(minutes=m) for m in (1, 2, 4, 5, 5, 5)]
    assert ceilings == [timedelta(minutes=m) for m in (2, 4, 8, 10, 10, 10)]
    assert backoff(2, low, high, 0.5) == timedelta(minutes=3)
    assert backoff(500, low, timedelta(hours=1), 1.0) == timedelta(hours=1)
    assert backoff(10**9, timedelta(days=1), timedelta(days=30), 0.0) == timedelta(days=15)
    # min_backoff == max_backoff: a fixed wait, as configured
    assert backoff(3, low, low, 0.7) == low


def test_backoff_spreads_a_batch_over_its_window() -> None:
    rng = random.Random(15)
    low, high = timedelta(minutes=1), timedelta(hours=1)
    for attempt in (1, 3, 12):
        waits = [backoff(attempt, low, high, rng.random()) for _ in range(1000)]
        floor, ceiling = backoff(attempt, low, high, 0.0), backoff(attempt, low, high, 1.0)
        assert all(floor <= w <= ceiling for w in waits)
        assert len(set(waits)) > 990
        # about half of the batch in each half of the window, not bunched at one end
        middle = floor + (ceiling - floor) / 2
        assert 400 < sum(w < middle for w in waits) < 600


class Rig:
    def __init__(
        self,
        store: SQLiteStore,
        clock: FakeClock,
        upstream: ScriptedUpstream,
        rng: random.Random | None = None,
        claim_at_intake: bool = True,
        poll: timedelta = timedelta(milliseconds=10),
    ) -> None:
        self.store, self.clock, self.upstream = store, clock, upstream
        config = DeliveryOptions(
            workers=2,
            min_backoff=timedelta(minutes=1),
            max_backoff=timedelta(minutes=4),
            max_lifetime=timedelta(minutes=10),
            poll_interval=poll,
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
        self.dispatcher = Dispatcher(
            store, engine, upstream, clock, config, metrics, "test", rng=rng or Draw(1.0)
        )
        # As `serve` wires them: what is sent at once is claimed as it is committed.
        self.intake = Intake(
            engine,
            store,
            clock,
            metrics,
            {},
            self.dispatcher.queued,
            claimer=self.dispatcher if claim_at_intake else None,
        )

    async def send(self, *headers: str, recipients: tuple[str, ...] = ("r@example.org",)) -> str:
        raw = ("\r\n".join(["Subject: hi", *headers]) + "\r\n\r\nbody\r\n").encode()
        accepted = await self.intake.accept(raw, "s@example.com", list(recipients), "test")
        return accepted.deliveries[0].id

    async def until(self, check: Callable[[], Any], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.005)

    async def state(self, delivery_id: str) -> DeliveryState:
        delivery = await self.store.get_delivery(delivery_id)
        assert delivery is not None
        return delivery.state


@pytest.fixture(params=[True, False], ids=["claimed at intake", "claimed when due"])
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "d.db")
    await store.open()
    rig = Rig(store, FakeClock(), ScriptedUpstream(), claim_at_intake=request.param)
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
    # the rig draws every jitter at the top: waits of 2, 4 and (capped) 4 minutes
    assert d is not None and d.due_at == start + timedelta(minutes=2) and d.attempts == 1

    for expected_wait in (4, 4):
        rig.clock.set(d.due_at)  # exactly due: not a moment late, not early
        rig.dispatcher.wake()
        await rig.until(lambda n=d.attempts + 1: deferred_after(n))
        previous, d = d, await rig.store.get_delivery(delivery_id)
        assert d is not None and previous.due_at is not None
        assert d.due_at == previous.due_at + timedelta(minutes=expected_wait)

    rig.clock.set(d.due_at)  # attempt 4 fails; its retry (10m + 4m) would pass max_lifetime
    rig.dispatcher.wake()
    await rig.until(lambda: _is(rig, delivery_id, S.FAILED))
    reasons = [t.reason for t in await rig.store.transitions(delivery_id)]
    assert "max_lifetime" in reasons[-1]
    assert rig.upstream.sent == []


async def test_deliveries_deferred_together_retry_at_different_times(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jitter.db")
    await store.open()
    rig = Rig(store, FakeClock(), ScriptedUpstream(), rng=random.Random(15))
    rig.upstream.results = [UpstreamTransient("451 busy", code=451)] * 10
    task = asyncio.create_task(rig.dispatcher.run())
    try:
        start = rig.clock.now()
        await rig.send(recipients=tuple(f"r{i}@example.org" for i in range(10)))

        async def all_deferred() -> bool:
            return (await store.count_by_state())[S.DEFERRED] == 10

        await rig.until(all_deferred)
        page = await store.list_deliveries(DeliveryQuery(state=S.DEFERRED))
        due = [d.due_at for d in page.deliveries]
        assert len(set(due)) == 10
        assert all(d is not None and start + MINUTE <= d <= start + 2 * MINUTE for d in due)
    finally:
        await rig.dispatcher.stop()
        await task
        await store.close()


class CountingClaims(SQLiteStore):
    claims = 0
    pause = 0.0  # how long each claim takes before it looks at the store

    async def claim_due(
        self,
        now: datetime,
        owner: str,
        limit: int,
        lease: timedelta,
        *,
        send_within: timedelta | None = None,
    ) -> Sequence[Delivery]:
        self.claims += 1
        if self.pause:
            await asyncio.sleep(self.pause)
        return await super().claim_due(now, owner, limit, lease, send_within=send_within)


async def test_a_store_that_refuses_at_once_is_retried_each_poll_not_in_a_spin(
    tmp_path: Path,
) -> None:
    store = CountingClaims(tmp_path / "refusing.db")
    await store.open()
    # Committed unclaimed, so it is due work that the claimer would come straight back for.
    rig = Rig(store, FakeClock(), ScriptedUpstream(), claim_at_intake=False)
    await rig.send()  # due now: the claimer would come straight back for it
    (writer,) = [t for t in asyncio.all_tasks() if t.get_name() == "sqlite-group-commit"]
    writer.cancel()  # from now on every claim fails at once with StoreUnavailable
    await asyncio.wait([writer])
    task = asyncio.create_task(rig.dispatcher.run())
    try:
        await asyncio.sleep(0.3)  # a rate is measured over time: 30 polls of 10 ms
        assert 1 <= store.claims < 100
    finally:
        await rig.dispatcher.stop()
        await task
        await store.close()


class GatedUpstream(ScriptedUpstream):
    """Takes nothing until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(self, envelope: Envelope, content: bytes) -> None:
        await self.gate.wait()
        await super().send(envelope, content)


async def test_more_than_the_queue_holds_is_claimed_when_due_and_sent_once(
    tmp_path: Path,
) -> None:
    store = CountingClaims(tmp_path / "burst.db")
    await store.open()
    upstream = GatedUpstream()
    # 2 workers: a queue of 4. No poll while the test sends (each poll makes the claimer look
    # at the store before the intake claims again).
    rig = Rig(store, FakeClock(), upstream, poll=timedelta(minutes=1))
    task = asyncio.create_task(rig.dispatcher.run())
    try:
        await rig.until(lambda: _caught_up(rig))
        before = store.claims
        # The workers are stuck on the upstream: the first ones are claimed at intake until
        # the queue is full, the rest are committed for the claimer to take when there is room.
        ids = await asyncio.gather(
            *(rig.send(recipients=(f"r{i}@example.org",)) for i in range(12))
        )
        at_intake = [
            i
            for i in ids
            if (await store.get_delivery(i)).state is S.SENDING  # type: ignore[union-attr]
        ]
        assert 4 <= len(at_intake) < 12
        upstream.gate.set()

        async def all_sent() -> bool:
            return (await store.count_by_state())[S.SENT] == 12

        await rig.until(all_sent)
        assert sorted(e.recipient for e in upstream.sent) == sorted(
            f"r{i}@example.org" for i in range(12)
        )
        assert store.claims > before  # the rest were claimed
        for delivery_id in at_intake:
            assert [t.state for t in await store.transitions(delivery_id)] == [
                S.QUEUED,
                S.SENDING,
                S.SENT,
            ]
    finally:
        await rig.dispatcher.stop()
        await task
        await store.close()


@contextlib.asynccontextmanager
async def _running(rig: Rig) -> AsyncIterator[None]:
    """The rig's dispatcher running and caught up with its (empty) store; stopped after,
    and its store closed."""
    await rig.store.open()
    task = asyncio.create_task(rig.dispatcher.run())
    try:
        await rig.until(lambda: _caught_up(rig))
        yield
    finally:
        await rig.dispatcher.stop()
        await task
        await rig.store.close()


class SlowClaims(CountingClaims):
    """Each claim takes 50 ms: still in flight when the next message asks for room."""

    pause = 0.05


async def test_a_lone_sender_is_claimed_at_intake_after_the_claim_in_flight(
    tmp_path: Path,
) -> None:
    # A wake-up (or a poll) makes the claimer look at the store before the intake claims
    # again. A message that then asked for room while that claim was in flight was committed
    # unclaimed, whose own claim was in flight when the next one asked, and so on: a lone
    # sender's messages each paid a claim of their own (63 % of them at idle).
    store = SlowClaims(tmp_path / "lone.db")
    rig = Rig(store, FakeClock(), ScriptedUpstream(), poll=timedelta(minutes=1))
    async with _running(rig):
        before = store.claims
        rig.dispatcher.wake()

        async def looking() -> bool:
            return store.claims > before

        await rig.until(looking)
        states = []
        for i in range(6):
            delivery_id = await rig.send(recipients=(f"r{i}@example.org",))
            states.append(await rig.state(delivery_id))
        assert store.claims - before == 1  # the look the wake-up asked for, nothing after
        assert all(state in {S.SENDING, S.SENT} for state in states), states
        await rig.until(lambda: _sent(rig.upstream, 6))


class ShortClaims(CountingClaims):
    """Each claim takes 20 ms: in flight while messages commit, over before `caught_up` ends."""

    pause = 0.02


async def test_mail_committed_unclaimed_does_not_keep_the_intake_from_claiming(
    tmp_path: Path,
) -> None:
    # Two senders at once: one waits in `caught_up` for the claim in flight, the other
    # commits unclaimed meanwhile. That commit used to count as a wake-up, so the claim in
    # flight could not clear `_behind`; each claim then had a message committed unclaimed
    # during it, and an instance under steady load stayed behind (with two instances under
    # bench/pg_cpu.py, 27 % of deliveries paid a claim; 2 % after).
    rig = Rig(
        ShortClaims(tmp_path / "pairs.db"),
        FakeClock(),
        ScriptedUpstream(),
        poll=timedelta(minutes=1),
    )
    async with _running(rig):
        rig.dispatcher.wake()  # behind, with a claim in flight
        unclaimed = 0
        for i in range(6):
            pair = await asyncio.gather(
                rig.send(recipients=(f"a{i}@example.org",)),
                rig.send(recipients=(f"b{i}@example.org",)),
            )
            states = [await rig.state(delivery_id) for delivery_id in pair]
            unclaimed += sum(state is S.QUEUED for state in states)
        assert unclaimed <= 2, unclaimed  # the first pair's, while the wake-up's claim ran
        await rig.until(lambda: _sent(rig.upstream, 12))


async def test_mail_committed_unclaimed_for_want_of_room_goes_before_newer_mail(
    tmp_path: Path,
) -> None:
    # The queue full, three messages are committed unclaimed; then one new message for each
    # one the upstream takes. The claimer waits for half the queue to be free: the intake
    # must not take each place as it frees, or those three wait for as long as mail comes.
    upstream = StepUpstream()
    rig = Rig(SQLiteStore(tmp_path / "full.db"), FakeClock(), upstream, poll=timedelta(minutes=1))
    async with _running(rig):  # a queue of 4
        first = [await rig.send(recipients=(f"first{i}@example.org",)) for i in range(6)]
        assert [await rig.state(d) for d in first] == [S.SENDING] * 6  # 2 sending, 4 queued
        rig.clock.advance(timedelta(seconds=1))
        over = [await rig.send(recipients=(f"over{i}@example.org",)) for i in range(3)]
        assert [await rig.state(d) for d in over] == [S.QUEUED] * 3
        for i in range(10):
            rig.clock.advance(timedelta(seconds=1))
            await rig.send(recipients=(f"new{i}@example.org",))
            upstream.step.release()
            await rig.until(lambda n=i: _sent(upstream, n + 1))
        for _ in range(9):
            upstream.step.release()
        await rig.until(lambda: _sent(upstream, 19))
        order = [e.recipient for e in upstream.sent]
        assert {r for r in order[:9] if r.startswith("over")} == {
            f"over{i}@example.org" for i in range(3)
        }, order


class StepUpstream(ScriptedUpstream):
    """Takes one message each time `step` is released: a slow upstream the test paces."""

    def __init__(self) -> None:
        super().__init__()
        self.step = asyncio.Semaphore(0)

    async def send(self, envelope: Envelope, content: bytes) -> None:
        await self.step.acquire()
        await super().send(envelope, content)


async def test_what_is_due_in_the_store_goes_before_new_mail_under_steady_load(
    tmp_path: Path,
) -> None:
    # Deliveries already due in the store (left by a process that died, committed while the
    # queue was full, or delayed ones whose time came) must not wait behind a steady stream of
    # new mail that the intake could claim as it commits: seen as a dead process's in-flight
    # sends going out only once the load stopped, tens of seconds after the restart.
    store = SQLiteStore(tmp_path / "backlog.db")
    await store.open()
    upstream = StepUpstream()
    rig = Rig(store, FakeClock(), upstream)  # 2 workers: a queue of 4
    old = [await rig.send(recipients=(f"old{i}@example.org",)) for i in range(12)]
    task = asyncio.create_task(rig.dispatcher.run())
    try:
        fresh: list[str] = []
        for i in range(30):  # one new message for each one the upstream takes
            rig.clock.advance(timedelta(seconds=1))
            fresh.append(await rig.send(recipients=(f"new{i}@example.org",)))
            upstream.step.release()
            await rig.until(lambda n=i: _sent(upstream, n + 1))
        for _ in range(len(old)):
            upstream.step.release()
        await rig.until(lambda: _sent(upstream, len(old) + len(fresh)))
        order = [e.recipient for e in upstream.sent]
        assert sorted(order[: len(old)]) == sorted(f"old{i}@example.org" for i in range(12))
    finally:
        await rig.dispatcher.stop()
        await task
        await store.close()


async def _caught_up(rig: Rig, room: int = 1) -> bool:
    """Whether the intake may claim `room` deliveries now: the claimer has looked at the
    store since it last may have fallen behind, and the queue has that room."""
    if rig.dispatcher.reserve(room) is None:
        return False
    rig.dispatcher.cancel(room)
    return True


async def _sent(upstream: ScriptedUpstream, count: int) -> bool:
    return len(upstream.sent) >= count


class RefusingIntake(SQLiteStore):
    refuse = False

    async def add_message(self, *args: Any, **kwargs: Any) -> None:
        if self.refuse:
            raise StoreUnavailable("disk full")
        await super().add_message(*args, **kwargs)


async def test_a_commit_that_fails_gives_back_the_room_it_was_promised(tmp_path: Path) -> None:
    store = RefusingIntake(tmp_path / "refusing.db")
    await store.open()
    rig = Rig(store, FakeClock(), ScriptedUpstream())
    task = asyncio.create_task(rig.dispatcher.run())
    try:
        store.refuse = True
        for _ in range(8):  # twice the queue
            with pytest.raises(StoreUnavailable):
                await rig.send()
        store.refuse = False
        await rig.until(lambda: _caught_up(rig, 4))  # the whole queue is free again
        delivery_id = await rig.send()
        await rig.until(lambda: _is(rig, delivery_id, S.SENT))
        assert await store.claim_due(rig.clock.now(), "x", 10, MINUTE) == []
    finally:
        await rig.dispatcher.stop()
        await task
        await store.close()


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
