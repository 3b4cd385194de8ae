"""Health, readiness and metrics: what orchestrators and Prometheus call."""

from __future__ import annotations

import structlog
from aiohttp import web

from sendguard.clock import monotonic
from sendguard.errors import StoreUnavailable, UpstreamError
from sendguard.ingress.http_context import Api, api

log = structlog.get_logger("sendguard.http")


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers (whatever the store's state: a full disk is not cured
    by a restart, and an orchestrator restarts on a failed liveness probe)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store can commit and the upstream is reachable; the body says why not."""
    checks: dict[str, str] = {}
    try:
        await api(request).store.check()
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        checks["store"] = str(exc)
    try:
        await api(request).upstream.check()
        checks["upstream"] = "ok"
    except UpstreamError as exc:
        checks["upstream"] = str(exc)
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the state gauge is read from the store at scrape time."""
    registry = api(request).metrics
    try:
        registry.set_states(await api(request).store.count_by_state())
    except StoreUnavailable as exc:
        log.warning("state gauge not refreshed", error=str(exc))
    await refresh_queue_ages(api(request))
    return web.Response(
        body=registry.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def refresh_queue_ages(ctx: Api) -> None:
    """The gauges alerts watch: held queue age, dispatcher lag, store up and its latency."""
    started = monotonic()
    try:
        await ctx.store.check()  # a store whose commits fail (disk full) answers reads
        ages = await ctx.store.queue_ages()
    except StoreUnavailable:
        ctx.metrics.store_up.set(0)
        return
    ctx.metrics.store_up.set(1)
    ctx.metrics.store_query.set(monotonic() - started)
    now = ctx.clock.now()
    held = ages.oldest_held_since
    ctx.metrics.held_oldest.set((now - held).total_seconds() if held else 0)
    due = ages.oldest_due_at
    ctx.metrics.dispatch_lag.set(max(0.0, (now - due).total_seconds()) if due else 0)
