"""The server's simulations in the store (`SimulationRuns`), on every store backend: one
running at a time, held under a lease by its owner, the last few finished ones kept."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sendguard.ids import new_id
from sendguard.simulations import Simulation, SimulationStatus
from sendguard.store.base import Store

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=1)
KEEP = 20


def simulation(owner: str = "host-a:101", at: datetime = T0) -> Simulation:
    return Simulation(
        id=new_id(),
        actor="ana",
        config_hash="c0ffee",
        since=at - timedelta(days=30),
        until=at,
        started_at=at,
        owner=owner,
        lease_until=at + LEASE,
    )


def done(sim: Simulation, at: datetime, report: object = None) -> Simulation:
    return replace(
        sim,
        status=SimulationStatus.DONE,
        finished_at=at,
        lease_until=None,
        report=json.dumps(report if report is not None else {"changed": 0}),
        html="<!doctype html><p>Zoë</p>",
    )


async def test_one_runs_at_a_time_and_a_second_start_gets_the_running_one(store: Store) -> None:
    assert await store.running_simulation() is None
    first = simulation()
    assert await store.start_simulation(first, T0, KEEP) == first
    assert await store.running_simulation() == first
    assert await store.get_simulation(first.id) == first

    second = simulation("host-b:202", T0 + timedelta(seconds=5))
    assert await store.start_simulation(second, T0 + timedelta(seconds=5), KEEP) == first
    assert await store.get_simulation(second.id) is None  # nothing of it was written


async def test_of_starts_at_once_exactly_one_starts(store: Store) -> None:
    candidates = [simulation(f"host:{n}") for n in range(6)]
    answers = await asyncio.gather(*(store.start_simulation(c, T0, KEEP) for c in candidates))
    started = [c for c, a in zip(candidates, answers, strict=True) if a.id == c.id]
    assert len(started) == 1
    assert {a.id for a in answers} == {started[0].id}
    assert await store.running_simulation() == started[0]


async def test_its_owner_finishes_it_with_the_report_and_the_next_may_start(store: Store) -> None:
    sim = simulation()
    await store.start_simulation(sim, T0, KEEP)
    report = {"deliveries": 4, "changed": 1, "changes": [{"recipient": "ann@example.org"}]}
    ended = done(sim, T0 + timedelta(seconds=20), report)
    assert not await store.finish_simulation(replace(ended, owner="host-b:202"), KEEP)
    assert await store.finish_simulation(ended, KEEP)
    assert not await store.finish_simulation(ended, KEEP)  # once only

    got = await store.get_simulation(sim.id)
    assert got == ended
    assert got is not None and json.loads(got.report or "") == report
    assert got.html == "<!doctype html><p>Zoë</p>"
    assert await store.running_simulation() is None

    then = T0 + timedelta(minutes=1)
    nxt = simulation("host-b:202", then)
    assert await store.start_simulation(nxt, then, KEEP) == nxt
    failed = replace(
        nxt,
        status=SimulationStatus.FAILED,
        finished_at=then + timedelta(seconds=1),
        lease_until=None,
        error="more than simulate.max_messages (1)",
    )
    assert await store.finish_simulation(failed, KEEP)
    assert await store.get_simulation(nxt.id) == failed


async def test_the_owner_renews_its_lease_and_nobody_else_can(store: Store) -> None:
    sim = simulation()
    await store.start_simulation(sim, T0, KEEP)
    later = T0 + timedelta(minutes=5)
    assert await store.renew_simulation(sim.id, sim.owner, later)
    assert not await store.renew_simulation(sim.id, "host-b:202", T0 + timedelta(hours=1))
    running = await store.running_simulation()
    assert running is not None and running.lease_until == later
    # Renewed, it still blocks a start after its first lease would have ended.
    other = simulation("host-b:202", T0 + timedelta(minutes=3))
    assert (await store.start_simulation(other, T0 + timedelta(minutes=3), KEEP)).id == sim.id
    await store.finish_simulation(done(sim, T0 + timedelta(minutes=4)), KEEP)
    assert not await store.renew_simulation(sim.id, sim.owner, later)  # finished


async def test_a_lapsed_lease_fails_the_simulation_and_frees_the_next_start(store: Store) -> None:
    dead = simulation("host-a:101")
    await store.start_simulation(dead, T0, KEEP)
    # Within its lease it blocks; past it, the start marks it failed and goes ahead.
    early = T0 + LEASE - timedelta(seconds=1)
    assert (await store.start_simulation(simulation("b:2", early), early, KEEP)).id == dead.id
    late = T0 + LEASE + timedelta(seconds=1)
    nxt = simulation("host-b:202", late)
    assert await store.start_simulation(nxt, late, KEEP) == nxt

    failed = await store.get_simulation(dead.id)
    assert failed is not None
    assert failed.status is SimulationStatus.FAILED
    assert failed.finished_at == late and failed.lease_until is None
    assert "host-a:101" in (failed.error or "") and "lease" in (failed.error or "")
    # Its owner, back from a stall, can neither renew it nor overwrite the failure.
    assert not await store.renew_simulation(dead.id, dead.owner, late + LEASE)
    assert not await store.finish_simulation(done(dead, late), KEEP)
    assert (await store.get_simulation(dead.id)) == failed


async def test_expire_marks_only_lapsed_leases(store: Store) -> None:
    sim = simulation()
    await store.start_simulation(sim, T0, KEEP)
    assert await store.expire_simulations(T0 + LEASE, KEEP) == 0  # ends at, not before
    assert await store.running_simulation() == sim
    assert await store.expire_simulations(T0 + LEASE + timedelta(microseconds=1), KEEP) == 1
    assert await store.running_simulation() is None
    got = await store.get_simulation(sim.id)
    assert got is not None and got.status is SimulationStatus.FAILED
    assert await store.expire_simulations(T0 + timedelta(days=1), KEEP) == 0


async def test_only_the_newest_keep_finished_ones_are_kept(store: Store) -> None:
    ids = []
    for n in range(4):
        at = T0 + timedelta(minutes=n)
        sim = simulation(at=at)
        assert await store.start_simulation(sim, at, 2) == sim
        assert await store.finish_simulation(done(sim, at + timedelta(seconds=30)), 2)
        ids.append(sim.id)
    kept = [await store.get_simulation(i) for i in ids]
    assert [k is not None for k in kept] == [False, False, True, True]

    # A running one is never forgotten, and does not count against `keep`.
    at = T0 + timedelta(minutes=10)
    running = simulation(at=at)
    await store.start_simulation(running, at, 1)
    assert await store.get_simulation(ids[3]) is not None
    assert await store.finish_simulation(done(running, at + timedelta(seconds=1)), 1)
    assert await store.get_simulation(ids[3]) is None
    assert await store.get_simulation(running.id) is not None
    # Failed by a lapsed lease counts as finished too.
    at = T0 + timedelta(minutes=20)
    lapsed = simulation(at=at)
    await store.start_simulation(lapsed, at, 1)
    assert await store.expire_simulations(at + timedelta(hours=1), 1) == 1
    assert await store.get_simulation(running.id) is None
    assert await store.get_simulation(lapsed.id) is not None
