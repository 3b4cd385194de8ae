"""What-if replays on the server: `POST /v1/simulations` and `GET /v1/simulations/{id}`.

The same replay as `sendguard simulate`, over the server's own recorded traffic: the candidate
config comes inline in the request (YAML or JSON text, or a JSON object; never a path, so an
API token cannot make the server read its files), the window as `since` or `from`/`to`.
Simulations are kept in the store, so every worker of `serve --workers N` and every instance
sharing a PostgreSQL sees the same ones, and they outlive a restart. One runs at a time across
all of them (a second gets 409 with the running one's id), in a process of its own, run and
held under a lease by the worker that started it (`sendguard.simulation_runs`); it is stopped
after `simulate.timeout`, and a window of more than `simulate.max_messages` messages is
refused. The last `simulate.keep` finished simulations and their reports are kept. A start is
audited under the API token's name.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import structlog
import yaml
from aiohttp import web
from pydantic import Field

from sendguard.audit import AuditEntry
from sendguard.config import parse_config
from sendguard.duration import parse_duration
from sendguard.errors import ConfigError, ConfigProblem, InvalidMessage, StoreUnavailable
from sendguard.fields import parse_time
from sendguard.ids import new_id
from sendguard.ingress.api_admin import RELOADER, invalid_config
from sendguard.ingress.http_context import api, identity
from sendguard.ingress.payloads import BadRequest, read_json
from sendguard.ingress.views import when
from sendguard.review import NotFound
from sendguard.secret import is_reference
from sendguard.simulation_runs import Simulations
from sendguard.simulations import Simulation
from sendguard.validation import Strict

log = structlog.get_logger("sendguard.simulations")

DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=3650)


_TIME: dict[str, Any] = {"format": "date-time"}


class SimulationPayload(Strict):
    """`POST /v1/simulations`: the candidate config and the window of recorded traffic."""

    config: str | dict[str, Any] = Field(
        description="the candidate config: YAML or JSON text, or a JSON object"
    )
    since: str | None = Field(default=None, description="the window up to now, like 7d")
    # RFC 3339 text, read by `parse_time` (pydantic would also take a number as epoch seconds).
    from_: str | None = Field(
        default=None, alias="from", description="window start", json_schema_extra=_TIME
    )
    to: str | None = Field(
        default=None, description="window end (with from; default now)", json_schema_extra=_TIME
    )


def view(sim: Simulation) -> dict[str, Any]:
    """The JSON answer, without the report (see `answer`)."""
    out: dict[str, Any] = {
        "id": sim.id,
        "status": sim.status.value,
        "actor": sim.actor,
        "config_hash": sim.config_hash,
        "since": when(sim.since),
        "until": when(sim.until),
        "started_at": when(sim.started_at),
        "finished_at": when(sim.finished_at),
    }
    if sim.error is not None:
        out["error"] = sim.error
    return out


def answer(
    sim: Simulation, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON answer with the report once done. The store keeps the report as the JSON text
    the worker made: it is put in as it is, not parsed and written again (megabytes over a
    large window)."""
    text = json.dumps(view(sim))
    if sim.report is not None:
        text = f'{text[:-1]}, "report": {sim.report}}}'
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")


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
        try:
            start = parse_time(payload.from_, field="from")
            end = now if payload.to is None else parse_time(payload.to, field="to")
        except InvalidMessage as exc:
            raise BadRequest(str(exc), exc.field or "from") from None
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
    running = await simulations.running()
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
    options = request.app[RELOADER].settings.config.simulate
    actor = identity(request).name
    now = ctx.clock.now()
    sim = Simulation(
        id=new_id(),
        actor=actor,
        config_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        since=since,
        until=until,
        started_at=now,
        owner=simulations.owner,
        lease_until=now + options.lease,
    )
    job = {
        "config": text,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "max_messages": options.max_messages,
    }
    # The store decides: another may have started meanwhile, here or on any other worker.
    running = await simulations.start(sim, job, options)
    if running.id != sim.id:
        return _conflict(running)
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
    return answer(sim, 202, {"Location": f"/v1/simulations/{sim.id}"})


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
    keep = request.app[RELOADER].settings.config.simulate.keep
    sim = await request.app[SIMULATIONS].get(request.match_info["id"], keep)
    if sim is None:
        raise NotFound(
            f"no simulation {request.match_info['id']} (only the last simulate.keep finished"
            " ones are kept)"
        )
    if fmt == "html":
        if sim.html is None:
            return web.json_response(
                {
                    "error": {
                        "code": "conflict",
                        "message": f"simulation {sim.id} is {sim.status.value}: no report"
                        + (f" ({sim.error})" if sim.error else ""),
                    }
                },
                status=409,
            )
        return web.Response(text=sim.html, content_type="text/html", charset="utf-8")
    return answer(sim)
