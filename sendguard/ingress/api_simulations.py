"""What-if replays on the server: `POST /v1/simulations` and `GET /v1/simulations/{id}`.

The same replay as `sendguard simulate`, over the server's own recorded traffic: the candidate
config comes inline in the request (YAML or JSON text, or a JSON object; never a path, so an
API token cannot make the server read its files), the window as `since` or `from`/`to`. One
simulation runs at a time (a second gets 409 with the running one's id), in a process of its
own (`sendguard.simulate.worker`) so SMTP and HTTP stay responsive; it is stopped after
`simulate.timeout`, and a window of more than `simulate.max_messages` messages is refused.
The last `simulate.keep` finished simulations and their reports are kept in memory (until
the server restarts). A start is audited under the API token's name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
import yaml
from aiohttp import web
from pydantic import Field

from sendguard.audit import AuditEntry
from sendguard.config import SimulateOptions, StoreOptions, parse_config
from sendguard.duration import parse_duration
from sendguard.errors import ConfigError, ConfigProblem, StoreUnavailable
from sendguard.ids import new_id
from sendguard.ingress.api_admin import RELOADER, invalid_config
from sendguard.ingress.http_context import api, identity
from sendguard.ingress.payloads import BadRequest, read_json
from sendguard.ingress.views import when
from sendguard.phrasing import human_duration
from sendguard.review import NotFound
from sendguard.secret import is_reference
from sendguard.validation import Strict

log = structlog.get_logger("sendguard.simulations")

DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=3650)


class SimulationPayload(Strict):
    """`POST /v1/simulations`: the candidate config and the window of recorded traffic."""

    config: str | dict[str, Any] = Field(
        description="the candidate config: YAML or JSON text, or a JSON object"
    )
    since: str | None = Field(default=None, description="the window up to now, like 7d")
    from_: datetime | None = Field(default=None, alias="from", description="window start")
    to: datetime | None = Field(default=None, description="window end (with from; default now)")


@dataclass
class Simulation:
    """One simulation: running, done (with its report) or failed (with why)."""

    id: str
    actor: str
    config_hash: str
    since: datetime
    until: datetime
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    report: dict[str, Any] | None = None
    html: str | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        """The JSON answer (the report once done)."""
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "actor": self.actor,
            "config_hash": self.config_hash,
            "since": when(self.since),
            "until": when(self.until),
            "started_at": when(self.started_at),
            "finished_at": when(self.finished_at),
        }
        if self.report is not None:
            out["report"] = self.report
        if self.error is not None:
            out["error"] = self.error
        return out


class Simulations:
    """The server's simulations: at most one running, the last few finished ones kept."""

    def __init__(self, store: StoreOptions) -> None:
        """`store` is the store the server runs on (its recorded traffic is replayed)."""
        self._store = store
        self._all: OrderedDict[str, Simulation] = OrderedDict()
        self._running: tuple[Simulation, asyncio.Task[None]] | None = None

    @property
    def running(self) -> Simulation | None:
        """The simulation under way, if any."""
        return self._running[0] if self._running else None

    def get(self, simulation_id: str) -> Simulation | None:
        """A running or kept simulation."""
        return self._all.get(simulation_id)

    def start(self, simulation: Simulation, job: dict[str, Any], options: SimulateOptions) -> None:
        """Run `simulation` in the background; the caller has checked none is running."""
        job = {**job, "store": {"url": self._store.url, "schema": self._store.schema_}}
        task = asyncio.create_task(self._run(simulation, job, options), name="simulation")
        self._running = (simulation, task)
        self._all[simulation.id] = simulation
        finished = [s for s in self._all.values() if s.status != "running"]
        for old in finished[: max(0, len(finished) - options.keep)]:
            del self._all[old.id]

    async def _run(self, sim: Simulation, job: dict[str, Any], options: SimulateOptions) -> None:
        try:
            answer = await _in_worker(job, options.timeout)
            if "error" in answer:
                sim.status, sim.error = "failed", str(answer["error"])
            else:
                sim.status, sim.report, sim.html = "done", answer["report"], answer["html"]
        except _WorkerFailed as exc:
            sim.status, sim.error = "failed", str(exc)
        finally:
            self._running = None
        log.info("simulation finished", simulation=sim.id, status=sim.status, error=sim.error)

    async def __aenter__(self) -> Simulations:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the running simulation (its process is killed)."""
        if self._running is not None:
            sim, task = self._running
            task.cancel()
            await asyncio.wait([task])
            sim.status, sim.error = "failed", "the server stopped"


class _WorkerFailed(Exception):
    pass


async def _in_worker(job: dict[str, Any], limit: timedelta) -> dict[str, Any]:
    """Run the job in `python -m sendguard.simulate.worker`; kill it past `limit`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sendguard.simulate.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
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


SIMULATIONS: web.AppKey[Simulations] = web.AppKey("simulations", Simulations)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_post("/v1/simulations", start_simulation)
    router.add_get("/v1/simulations/{id}", get_simulation)


def _references(value: Any, path: str) -> list[str]:
    """The field paths in `value` holding `env:`/`file:` secret references."""
    if isinstance(value, str):
        return [path] if is_reference(value) else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _references(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _references(v, f"{path}[{i}]")]
    return []


def _candidate_text(payload: SimulationPayload) -> str:
    """The candidate as text; ConfigError for a secret reference (never read for a request:
    the simulation does not need secrets, and reading one could reveal it in an error)."""
    if isinstance(payload.config, dict):
        text, data = json.dumps(payload.config), payload.config
    else:
        text = payload.config
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None  # parse_config names the YAML error
    found = _references(data, "") if isinstance(data, dict) else []
    if found:
        raise ConfigError(
            [
                ConfigProblem(
                    p,
                    "secret references (env:, file:) are not read in a config sent over HTTP;"
                    " a simulation needs none: leave the field out",
                )
                for p in found
            ]
        )
    return text


def _window(payload: SimulationPayload, now: datetime) -> tuple[datetime, datetime]:
    if payload.from_ is not None:
        if payload.since is not None:
            raise BadRequest("since: give either since or from (and to), not both", "since")
        start, end = payload.from_, payload.to or now
        for name, at in (("from", start), ("to", end)):
            if at.tzinfo is None:
                raise BadRequest(f"{name}: needs a UTC offset, like 2026-11-01T00:00:00Z", name)
        if end <= start:
            raise BadRequest("to: must be after from", "to")
        return start, end
    if payload.to is not None:
        raise BadRequest("to: needs from", "to")
    try:
        span = parse_duration(payload.since) if payload.since else DEFAULT_WINDOW
    except ValueError as exc:
        raise BadRequest(f"since: {exc}", "since") from None
    return now - min(span, MAX_WINDOW), now


async def start_simulation(request: web.Request) -> web.Response:
    """Validate the candidate and the window; start the simulation; 202 with its id."""
    simulations = request.app[SIMULATIONS]
    running = simulations.running
    if running is not None:
        return _conflict(running)
    payload = await read_json(request, SimulationPayload)
    ctx = api(request)
    since, until = _window(payload, ctx.clock.now())
    try:
        text = _candidate_text(payload)
        parse_config(text, "the candidate config", environ={})
    except ConfigError as exc:
        return invalid_config(
            exc, f"the candidate config has {len(exc.problems)} problem(s)", prefix="config"
        )
    running = simulations.running  # the body was read meanwhile: another may have started
    if running is not None:
        return _conflict(running)
    options = request.app[RELOADER].settings.config.simulate
    actor = identity(request).name
    sim = Simulation(
        id=new_id(),
        actor=actor,
        config_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        since=since,
        until=until,
        started_at=ctx.clock.now(),
    )
    job = {
        "config": text,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "max_messages": options.max_messages,
    }
    simulations.start(sim, job, options)
    try:
        await ctx.store.add_audit(
            AuditEntry(
                sim.started_at,
                actor,
                "simulate",
                f"simulation:{sim.id}",
                f"window {when(since)} to {when(until)}; candidate sha256 {sim.config_hash}",
            )
        )
    except StoreUnavailable:
        log.warning("simulation not audited: the store is unavailable", simulation=sim.id)
    return web.json_response(
        sim.view(), status=202, headers={"Location": f"/v1/simulations/{sim.id}"}
    )


def _conflict(running: Simulation) -> web.Response:
    return web.json_response(
        {
            "error": {
                "code": "conflict",
                "message": f"simulation {running.id} is running (one at a time); "
                f"wait for GET /v1/simulations/{running.id} to say done",
                "id": running.id,
            }
        },
        status=409,
    )


async def get_simulation(request: web.Request) -> web.StreamResponse:
    """Status, and the report once done: JSON, or the HTML page with `?format=html`."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "html"):
        raise BadRequest("format: must be json or html", "format")
    sim = request.app[SIMULATIONS].get(request.match_info["id"])
    if sim is None:
        raise NotFound(
            f"no simulation {request.match_info['id']} (only the last simulate.keep are kept,"
            " until the server restarts)"
        )
    if fmt == "html":
        if sim.html is None:
            return web.json_response(
                {
                    "error": {
                        "code": "conflict",
                        "message": f"simulation {sim.id} is {sim.status}: no report"
                        + (f" ({sim.error})" if sim.error else ""),
                    }
                },
                status=409,
            )
        return web.Response(text=sim.html, content_type="text/html", charset="utf-8")
    return web.json_response(sim.view())
