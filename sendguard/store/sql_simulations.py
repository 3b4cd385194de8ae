"""The `SimulationRuns` role in SQL, for every SQL backend (mixed into `SqlStore`).

"One at a time" is the unique partial index `simulations_running` (schema 11): the start is
one conditional INSERT (`ON CONFLICT ... DO NOTHING`) that changes no row while another is
running, on any worker or instance, whatever the isolation level. A running row is held by its
owner under a lease, like a claimed delivery: the owner renews it while the replay runs; once it
ends, the next start (or a read that notices) marks the simulation failed. Every write here
touches the `simulations` table only: no transaction spans another concern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from sendguard.clock import from_micros, to_micros
from sendguard.simulations import Simulation, SimulationStatus, lease_expired
from sendguard.store import codec
from sendguard.store.base import SimulationRuns
from sendguard.store.sql_jobs import SqlJobs, Tx

T = TypeVar("T")

# A simulation's columns, in `_simulation`'s order (spelled out: no SQL is assembled here).
_RUNNING = (
    "SELECT id, actor, config_hash, since_at, until_at, started_at, owner, lease_until, status,"
    " finished_at, error FROM simulations WHERE status = 'running'"
)
_ONE = (
    "SELECT id, actor, config_hash, since_at, until_at, started_at, owner, lease_until, status,"
    " finished_at, error, report, html FROM simulations WHERE id = ?"
)


def _simulation(row: Sequence[Any]) -> Simulation:
    """A row of `_RUNNING` (or `_ONE`) as a record without its report."""
    return Simulation(
        id=row[0],
        actor=row[1],
        config_hash=row[2],
        since=from_micros(row[3]),
        until=from_micros(row[4]),
        started_at=from_micros(row[5]),
        owner=row[6],
        lease_until=codec.moment(row[7]),
        status=SimulationStatus(row[8]),
        finished_at=codec.moment(row[9]),
        error=row[10],
    )


async def _forget_beyond(tx: Tx, keep: int) -> None:
    """Forget the finished simulations but the newest `keep` (by start)."""
    await tx.execute(
        "DELETE FROM simulations WHERE status <> 'running' AND id NOT IN"
        " (SELECT id FROM simulations WHERE status <> 'running'"
        " ORDER BY started_at DESC, id DESC LIMIT ?)",
        (max(keep, 0),),
    )


async def _expire(tx: Tx, now: int, keep: int) -> int:
    """Mark failed the running simulations whose lease ended before `now`."""
    expired = await tx.fetch(
        "SELECT id, owner FROM simulations WHERE status = 'running' AND lease_until < ?",
        (now,),
    )
    failed = 0
    for simulation_id, owner in expired:
        # Its lease is checked again: the owner may have renewed it meanwhile (PostgreSQL).
        failed += await tx.execute(
            "UPDATE simulations SET status = 'failed', finished_at = ?, lease_until = NULL,"
            " error = ? WHERE id = ? AND status = 'running' AND lease_until < ?",
            (now, lease_expired(owner), simulation_id, now),
        )
    if failed:
        await _forget_beyond(tx, keep)
    return failed


class SqlSimulations(SqlJobs, SimulationRuns):
    """The simulations table; the class mixing it in supplies the transactions."""

    async def start_simulation(
        self, simulation: Simulation, now: datetime, keep: int
    ) -> Simulation:
        if simulation.lease_until is None:
            raise ValueError("a simulation starts with a lease")
        values = (
            simulation.id,
            SimulationStatus.RUNNING.value,
            simulation.actor,
            simulation.config_hash,
            to_micros(simulation.since),
            to_micros(simulation.until),
            to_micros(simulation.started_at),
            simulation.owner,
            to_micros(simulation.lease_until),
        )

        async def job(tx: Tx) -> Sequence[Any] | None:
            await _expire(tx, to_micros(now), keep)
            if await tx.execute(
                "INSERT INTO simulations (id, status, actor, config_hash, since_at, until_at,"
                " started_at, owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (status) WHERE status = 'running' DO NOTHING",
                values,
            ):
                return None
            rows = await tx.fetch(_RUNNING)
            return rows[0] if rows else None

        running = await self._write(job)
        if running is None:
            return simulation
        return _simulation(running)

    async def renew_simulation(self, simulation_id: str, owner: str, until: datetime) -> bool:
        async def job(tx: Tx) -> int:
            return await tx.execute(
                "UPDATE simulations SET lease_until = ?"
                " WHERE id = ? AND owner = ? AND status = 'running'",
                (to_micros(until), simulation_id, owner),
            )

        return bool(await self._write(job))

    async def finish_simulation(self, finished: Simulation, keep: int) -> bool:
        if finished.status is SimulationStatus.RUNNING or finished.finished_at is None:
            raise ValueError("a finished simulation is done or failed, with its finished_at")
        html = None if finished.html is None else finished.html.encode("utf-8", "replace")
        values = (
            finished.status.value,
            to_micros(finished.finished_at),
            finished.error,
            finished.report,
            html,
            finished.id,
            finished.owner,
        )

        async def job(tx: Tx) -> int:
            changed = await tx.execute(
                "UPDATE simulations SET status = ?, finished_at = ?, lease_until = NULL,"
                " error = ?, report = ?, html = ?"
                " WHERE id = ? AND owner = ? AND status = 'running'",
                values,
            )
            if changed:
                await _forget_beyond(tx, keep)
            return changed

        return bool(await self._write(job))

    async def expire_simulations(self, now: datetime, keep: int) -> int:
        async def job(tx: Tx) -> int:
            return await _expire(tx, to_micros(now), keep)

        return await self._write(job)

    async def running_simulation(self) -> Simulation | None:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(_RUNNING)

        rows = await self._read(job)
        return _simulation(rows[0]) if rows else None

    async def get_simulation(self, simulation_id: str) -> Simulation | None:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(_ONE, (simulation_id,))

        # A report runs to megabytes over a large window: read off the event loop's thread.
        rows = await self._scan(job)
        if not rows:
            return None
        row = rows[0]
        html = None if row[12] is None else bytes(row[12]).decode("utf-8")
        return replace(_simulation(row), report=row[11], html=html)
