"""The HTTP ingress (aiohttp): health, readiness and metrics.

The JSON API of DESIGN.md grows here; every error leaves as `{"error": {...}}`.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from sendguard.config import HttpConfig, split_listen
from sendguard.delivery.upstream import Upstream
from sendguard.errors import StoreUnavailable, UpstreamError
from sendguard.metrics import Metrics
from sendguard.store.base import Store

log = structlog.get_logger("sendguard.http")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream", Upstream)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def error_body(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The error shape every endpoint uses."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store and the upstream are reachable."""
    checks: dict[str, str] = {}
    try:
        await request.app[STORE].check()
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        checks["store"] = str(exc)
    try:
        await request.app[UPSTREAM].check()
        checks["upstream"] = "ok"
    except UpstreamError as exc:
        checks["upstream"] = str(exc)
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the state gauge is read from the store at scrape time."""
    registry = request.app[METRICS]
    try:
        registry.set_states(await request.app[STORE].count_by_state())
    except StoreUnavailable as exc:
        log.warning("state gauge not refreshed", error=str(exc))
    return web.Response(
        body=registry.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves in the same JSON shape, never as an HTML page or a bare 500."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_body(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except StoreUnavailable:
        return error_body(503, "store_unavailable", "the store is unavailable; try again later")
    return response


def build_app(
    config: HttpConfig, store: Store, upstream: Upstream, registry: Metrics
) -> web.Application:
    """The aiohttp application with every route."""
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_size)
    app[STORE] = store
    app[UPSTREAM] = upstream
    app[METRICS] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpIngress:
    """The listening HTTP server."""

    def __init__(self, app: web.Application, config: HttpConfig) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        self._config = config
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        """Listen on `http.listen`."""
        await self._runner.setup()
        host, port = split_listen(self._config.listen)
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        server = self._runner.server
        assert self._site is not None and server is not None
        sockets = self._runner.addresses
        port: int = sockets[0][1]
        return port

    async def stop(self) -> None:
        """Stop accepting and finish in-flight requests."""
        await self._runner.cleanup()
