"""The HTTP ingress (aiohttp): the JSON API of DESIGN.md, health, readiness and metrics.

Which routes there are, who may call each (its `auth`) and what each answers is declared once,
in the route table (`sendguard.ingress.routes`): the router, the `guard` middleware's
authentication and `/openapi.json` are derived from it. Every error leaves as `{"error":
{"code", "message", "field"?}}`: 400 for bad input (naming the field), 401, 404, 405, 409, 413,
503 — never a 500 for bad input.
"""

from __future__ import annotations

import socket
from typing import Any

import structlog
from aiohttp import web

from sendguard.config import HttpOptions, split_listen
from sendguard.errors import Conflict, InvalidMessage, StoreUnavailable
from sendguard.identity import Identity, Role
from sendguard.ingress import openapi
from sendguard.ingress.esp.mapping import ANSWERS_IN_ESP_SHAPE
from sendguard.ingress.forwarded import FORWARDING, forwarding
from sendguard.ingress.http_context import (
    API,
    IDENTITY_KEY,
    TOKENS,
    Api,
    Handler,
    refuse_announced_oversize,
)
from sendguard.ingress.payloads import BadRequest
from sendguard.ingress.route import Auth, register, route_of
from sendguard.ingress.routes import ROUTES
from sendguard.review import NotFound
from sendguard.tokens import TokenSet

log = structlog.get_logger("sendguard.http")


def error_body(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The error shape every endpoint uses."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


def needs_token(request: web.Request) -> bool:
    """Whether the middleware must see a bearer token: as the matched route's `auth` says,
    and when no path matched (an unknown path tells a stranger nothing)."""
    if isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
        return False  # which methods a path allows is no secret: /openapi.json lists them
    route = route_of(request)
    auth = route.auth if route is not None else Auth.TOKEN
    return auth.needs_token(request.app[API].config.metrics_public)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's checks, in one middleware (each layer of aiohttp's middleware chain is
    a coroutine and a call per request): see a request that came through a trusted proxy as
    its client made it (`sendguard.ingress.forwarded`); require `Authorization: Bearer
    <token>` on every route but the public ones and record the token's name as the identity
    handlers act under; refuse a body announced over `http.max_body_size` before it is read
    (413; the ESP routes answer that themselves, in the ESP's error shape); and turn every
    failure, of these checks or of the handler, into the JSON error shape. Every answer that
    leaves through here says `Server: sendguard` (see `SERVER`)."""
    forwarding = request.app[FORWARDING]
    if forwarding is not None:  # behind a trusted proxy: the client's address, scheme and host
        request = forwarding.view(request)
    response: web.StreamResponse
    try:
        if needs_token(request):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            tokens = request.app[TOKENS]
            name = tokens.identify(token.strip()) if scheme.lower() == "bearer" else None
            if name is None:
                response = error_body(401, "unauthorized", "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="sendguard"'
                response.headers[SERVER] = SERVER_NAME
                return response
            request[IDENTITY_KEY] = Identity(name, Role.API)
        if request.match_info.handler not in ANSWERS_IN_ESP_SHAPE:
            refuse_announced_oversize(request)
        response = await handler(request)
    except Exception as exc:  # noqa: BLE001 - every failure answers in the error shape
        response = _error_answer(request, exc)
    response.headers[SERVER] = SERVER_NAME
    return response


def _error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error answer to `exc` (called while it is handled); a redirect is raised on."""
    if isinstance(exc, BadRequest):
        return error_body(400, exc.code, str(exc), exc.field)
    if isinstance(exc, InvalidMessage):
        return error_body(400, "invalid_message", str(exc), exc.field)
    if isinstance(exc, NotFound):
        return error_body(404, "not_found", str(exc))
    if isinstance(exc, Conflict):
        return error_body(409, "conflict", str(exc))
    if isinstance(exc, StoreUnavailable):
        return error_body(503, "store_unavailable", "the store is unavailable; try again later")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            exc.headers[SERVER] = SERVER_NAME  # a redirect: aiohttp answers it, as it is
            raise exc
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
    # A bug must still answer in the API's error shape, and be logged.
    log.exception("request failed", method=request.method, path=request.path)
    return error_body(500, "internal_error", "internal error; see the server log")


SERVER = "Server"
SERVER_NAME = "sendguard"
"""`Server: sendguard` on every answer. aiohttp names itself and Python with their versions
("Python/3.11 aiohttp/3.x"), which tells a scanner which advisories to try. `guard` sets it on
the answers it returns and on the redirects it raises on (no handler prepares its answer
itself: each returns it). An `on_response_prepare` signal did it before: a coroutine and
`Signal.send` per answer, some 5,000 instructions of a request's path."""


def build_app(context: Api, tokens: TokenSet) -> web.Application:
    """The aiohttp application with every route."""
    app = web.Application(middlewares=[guard], client_max_size=context.config.max_body_size)
    app[API] = context
    app[TOKENS] = tokens
    app[FORWARDING] = forwarding(context.config.trusted_proxies, context.config.proxy_headers)
    register(app, ROUTES)
    app[openapi.DOCUMENT] = openapi.LazyDocument(ROUTES)
    return app


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
