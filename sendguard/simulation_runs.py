"""This process's side of the server's simulations (`POST /v1/simulations`).

Starting one is a store write that fails while another is running on any worker or instance
(`SimulationRuns.start_simulation`). The process that started it runs the replay in a process
of its own (`python -m sendguard.simulate.worker`: seconds of pure Python that would hold the
GIL from SMTP and HTTP, and a process can be stopped past `simulate.timeout`), renews its lease
meanwhile, and writes how it ended (the report, or why it failed) to the store, where any
worker reads it. One whose process died is marked failed once its lease ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from sendguard.clock import Clock, monotonic
from sendguard.config import SimulateOptions, StoreOptions
from sendguard.errors import StoreUnavailable
from sendguard.metrics import MULTIPROC_DIR
from sendguard.phrasing import human_duration
from sendguard.simulations import Simulation, SimulationStatus
from sendguard.store.base import SimulationRuns

log = structlog.get_logger("sendguard.simulations")

# How often the running simulation's lease is renewed, as a share of it: two renewals may
# fail (a store briefly unavailable, a stalled loop) before it runs out.
RENEW_SHARE = 3
# Between attempts to record how a simulation ended while the store is unavailable.
FINISH_RETRY = 1.0


def lapsed(sim: Simulation, now: datetime) -> bool:
    """Whether a running simulation's lease has ended (its worker is gone or stalled)."""
    return sim.lease_until is not None and sim.lease_until < now


class Simulations:
    """This process's side of the simulations: starting one in the store, running those it
    started, holding their lease and recording how they ended."""

    def __init__(
        self, store_options: StoreOptions, store: SimulationRuns, clock: Clock, owner: str
    ) -> None:
        """`store_options` is the store the server runs on (its recorded traffic is replayed,
        by the worker process); `store` keeps the simulations; `owner` is this process."""
        self._store_options = store_options
        self._store = store
        self._clock = clock
        self.owner = owner
        self._running: dict[str, tuple[Simulation, SimulateOptions, asyncio.Task[None]]] = {}

    async def running(self) -> Simulation | None:
        """The simulation under way on any worker or instance, if any and not lapsed."""
        sim = await self._store.running_simulation()
        if sim is None or lapsed(sim, self._clock.now()):
            return None
        return sim

    async def get(self, simulation_id: str, keep: int) -> Simulation | None:
        """A running or kept simulation; one whose lease ended is marked failed first."""
        sim = await self._store.get_simulation(simulation_id)
        now = self._clock.now()
        if sim is not None and sim.status is SimulationStatus.RUNNING and lapsed(sim, now):
            await self._store.expire_simulations(now, keep)
            sim = await self._store.get_simulation(simulation_id)
        return sim

    async def start(
        self, sim: Simulation, job: dict[str, Any], options: SimulateOptions
    ) -> Simulation:
        """Record `sim` as running and run it in the background, unless another runs: return
        the running one (`sim` if it started)."""
        running = await self._store.start_simulation(sim, self._clock.now(), options.keep)
        if running.id != sim.id:
            return running
        job = {
            **job,
            "store": {"url": self._store_options.url, "schema": self._store_options.schema_},
        }
        task = asyncio.create_task(self._run(sim, job, options), name="simulation")
        self._running[sim.id] = (sim, options, task)
        task.add_done_callback(lambda _: self._running.pop(sim.id, None))
        return sim

    async def _run(self, sim: Simulation, job: dict[str, Any], options: SimulateOptions) -> None:
        worker = asyncio.create_task(_in_worker(job, options.timeout), name="simulation-worker")
        renewing = asyncio.create_task(
            self._renew(sim, options.lease, worker), name="simulation-lease"
        )
        try:
            await asyncio.wait([worker])
            if worker.cancelled():  # the lease was lost: another process marked it failed
                return
            ended = replace(sim, finished_at=self._clock.now(), lease_until=None)
            try:
                result = worker.result()
            except _WorkerFailed as exc:
                ended = replace(ended, status=SimulationStatus.FAILED, error=str(exc))
            except OSError as exc:  # the worker process could not be started
                log.exception("simulation worker not started", simulation=sim.id)
                ended = replace(
                    ended,
                    status=SimulationStatus.FAILED,
                    error=f"the simulation could not start ({exc}); see the server log",
                )
            else:
                if "error" in result:
                    ended = replace(
                        ended, status=SimulationStatus.FAILED, error=str(result["error"])
                    )
                else:
                    ended = replace(
                        ended,
                        status=SimulationStatus.DONE,
                        report=json.dumps(result["report"]),
                        html=str(result["html"]),
                    )
            # Still renewing: the lease holds while the result is written.
            await self._finish(ended, options)
        finally:
            worker.cancel()
            renewing.cancel()
            await asyncio.wait([worker, renewing])

    async def _renew(
        self, sim: Simulation, lease: timedelta, worker: asyncio.Task[dict[str, Any]]
    ) -> None:
        """Renew the lease until cancelled; stop `worker` if it was lost."""
        while True:
            await asyncio.sleep(lease.total_seconds() / RENEW_SHARE)
            try:
                kept = await self._store.renew_simulation(
                    sim.id, self.owner, self._clock.now() + lease
                )
            except StoreUnavailable as exc:
                log.warning("simulation lease not renewed", simulation=sim.id, error=str(exc))
                continue
            if not kept:
                log.error(
                    "simulation stopped: its lease ran out and it was marked failed",
                    simulation=sim.id,
                )
                worker.cancel()
                return

    async def _finish(self, ended: Simulation, options: SimulateOptions) -> None:
        """Record how `ended` ended; retried while the store is unavailable, up to the lease
        (then the simulation is failed by whoever finds its lease ended)."""
        give_up = monotonic() + options.lease.total_seconds()
        while True:
            try:
                recorded = await self._store.finish_simulation(ended, options.keep)
            except StoreUnavailable as exc:
                if monotonic() >= give_up:
                    log.warning(
                        "simulation's end not recorded", simulation=ended.id, error=str(exc)
                    )
                    return
                await asyncio.sleep(FINISH_RETRY)
                continue
            break
        if not recorded:
            log.warning("simulation ended after its lease was lost", simulation=ended.id)
            return
        log.info(
            "simulation finished", simulation=ended.id, status=ended.status.value, error=ended.error
        )

    async def __aenter__(self) -> Simulations:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the simulations this process runs (their worker is killed) and record them
        failed, once, without waiting for a store that is unavailable."""
        for sim, options, task in list(self._running.values()):
            task.cancel()
            await asyncio.wait([task])
            stopped = replace(
                sim,
                status=SimulationStatus.FAILED,
                finished_at=self._clock.now(),
                lease_until=None,
                error="the server stopped",
            )
            try:
                await self._store.finish_simulation(stopped, options.keep)
            except StoreUnavailable as exc:
                log.warning("simulation's stop not recorded", simulation=sim.id, error=str(exc))


class _WorkerFailed(Exception):
    pass


async def _in_worker(job: dict[str, Any], limit: timedelta) -> dict[str, Any]:
    """Run the job in `python -m sendguard.simulate.worker`; kill it past `limit`."""
    # Not in the supervisor's multiprocess directory of `serve --workers N`: a scrape sums
    # every file there, and the replay's counts (its messages "received" through `simulate`,
    # the candidate's decisions) would read as the server's traffic.
    env = {name: value for name, value in os.environ.items() if name != MULTIPROC_DIR}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sendguard.simulate.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(job).encode()), limit.total_seconds()
        )
    except TimeoutError:
        raise _WorkerFailed(
            f"stopped after simulate.timeout ({human_duration(limit)}); choose a shorter"
            " window or raise simulate.timeout"
        ) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    try:
        answer: dict[str, Any] = json.loads(out)
    except ValueError:
        answer = {}
    if not answer:  # a crash: its traceback is on stderr
        log.error("simulation worker failed", status=process.returncode, stderr=err[-4000:])
        raise _WorkerFailed(
            f"the simulation failed (exit status {process.returncode}); see the server log"
        )
    return answer
