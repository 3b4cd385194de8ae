"""Simulations the server runs (`POST /v1/simulations`), as the store keeps them.

A simulation is a row of the store, not state of the process that started it, so every worker
of `serve --workers N` and every instance sharing a PostgreSQL sees it, and it outlives a
restart. At most one is running across all of them. The process running it holds it under a
lease it renews while the replay runs (as the dispatcher holds a claimed delivery); one whose
lease ran out (its process died, or stalled past it) is marked failed and no longer blocks the
next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class SimulationStatus(StrEnum):
    """Where a simulation is: under way, finished with a report, or finished without one."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Simulation:
    """One simulation: who started it, over which window, with which candidate, and how it
    ended. `report` is the report as JSON text (`sendguard simulate --json`), `html` its page;
    both only once done. `owner` is the process running it (`host:pid`), `lease_until` when
    its hold ends unless renewed (None once finished)."""

    id: str
    actor: str
    config_hash: str
    since: datetime
    until: datetime
    started_at: datetime
    owner: str
    lease_until: datetime | None
    status: SimulationStatus = SimulationStatus.RUNNING
    finished_at: datetime | None = None
    error: str | None = None
    report: str | None = None
    html: str | None = None


def lease_expired(owner: str) -> str:
    """The error of a simulation whose lease ran out."""
    return (
        f"the server running it ({owner}) stopped renewing its lease (it stopped or was"
        " killed, or stalled past simulate.lease); start it again"
    )
