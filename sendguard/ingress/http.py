"""The HTTP ingress (aiohttp): the JSON API of DESIGN.md, health, readiness and metrics.

Every route needs a bearer token except the few in PUBLIC (and `/metrics` while
`http.metrics_public` is true). Every error leaves as `{"error": {"code", "message", "field"?}}`:
400 for bad input (naming the field), 401, 404, 405, 409, 413, 503 — never a 500 for bad input.
"""

from __future__ import annotations

import socket
from typing import Any

import structlog
from aiohttp import web

from sendguard.clock import monotonic
from sendguard.config import HttpOptions, split_listen
from sendguard.errors import Conflict, InvalidMessage, StoreUnavailable, UpstreamError
from sendguard.identity import Identity, Role
from sendguard.ingress import (
    api_admin,
    api_context,
    api_review,
    api_send,
    api_shadow,
    api_simulations,
    api_suppressions,
    esp,
    openapi,
)
from sendguard.ingress.http_context import API, IDENTITY_KEY, TOKENS, Api, Handler, api
from sendguard.ingress.payloads import BadRequest
from sendguard.review import NotFound
from sendguard.tokens import TokenSet

log = structlog.get_logger("sendguard.http")

PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json"})
# The review page signs people in with its own session cookie (sendguard/review_page/).
SESSION_PREFIXES = ("/review/",)


def error_body(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The error shape every endpoint uses."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


def is_public(request: web.Request) -> bool:
    """True for the routes that need no token."""
    if request.path in PUBLIC or request.path == "/review":
        return True
    if request.path.startswith(SESSION_PREFIXES):
        return True
    return request.path == "/metrics" and request.app[API].config.metrics_public


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error shape."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_body(400, exc.code, str(exc), exc.field)
    except InvalidMessage as exc:
        return error_body(400, "invalid_message", str(exc), exc.field)
    except NotFound as exc:
        return error_body(404, "not_found", str(exc))
    except Conflict as exc:
        return error_body(409, "conflict", str(exc))
    except StoreUnavailable:
        return error_body(503, "store_unavailable", "the store is unavailable; try again later")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        if exc.status == 413:
            limit = request.app[API].config.max_body_size
            message = f"the body is larger than http.max_body_size ({limit} bytes)"
        else:
            message = exc.reason
        response = error_body(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:  # a bug must still answer in the API's error shape, and be logged
        log.exception("request failed", method=request.method, path=request.path)
        return error_body(500, "internal_error", "internal error; see the server log")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require `Authorization: Bearer <token>` on every route but the public ones, and record
    the token's name as the identity handlers act under."""
    if not is_public(request) and not esp.authenticates_itself(request.path):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        name = request.app[TOKENS].identify(token.strip()) if scheme.lower() == "bearer" else None
        if name is None:
            response = error_body(401, "unauthorized", "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="sendguard"'
            return response
        request[IDENTITY_KEY] = Identity(name, Role.API)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store and the upstream are reachable."""
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


def build_app(context: Api, tokens: TokenSet) -> web.Application:
    """The aiohttp application with every route."""
    app = web.Application(
        middlewares=[errors, authenticate], client_max_size=context.config.max_body_size
    )
    app[API] = context
    app[TOKENS] = tokens
    add_routes(app.router)
    return app


def add_routes(router: web.UrlDispatcher) -> None:
    """Every route of the API."""
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
    api_send.add_routes(router)
    api_context.add_routes(router)
    api_review.add_routes(router)
    api_suppressions.add_routes(router)
    api_admin.add_routes(router)
    api_shadow.add_routes(router)
    api_simulations.add_routes(router)
    esp.add_routes(router)
    openapi.add_routes(router)


class HttpIngress:
    """The listening HTTP server."""

    def __init__(self, app: web.Application, config: HttpOptions) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        self._config = config

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on `http.listen`, or accept on `sock` (bound by sendguard.listeners)."""
        await self._runner.setup()
        if sock is not None:
            await web.SockSite(self._runner, sock).start()
            return
        host, port = split_listen(self._config.listen)
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        """Stop accepting and finish in-flight requests."""
        await self._runner.cleanup()
