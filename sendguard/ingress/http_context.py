"""What every HTTP handler works with, kept apart so route modules need not import the app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sendguard.clock import Clock
from sendguard.config import HttpOptions
from sendguard.delivery.upstream import Upstream
from sendguard.events import EventType
from sendguard.identity import Identity
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.review import Review
from sendguard.store.base import Store
from sendguard.suppression_enforcement import SuppressionEnforcement
from sendguard.tokens import TokenSet

BUILT_IN_EVENT_TYPES = frozenset(t.value for t in EventType)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Api:
    """What the handlers work with."""

    store: Store
    intake: Intake
    review: Review
    upstream: Upstream
    metrics: Metrics
    clock: Clock
    wake: Callable[[], None]
    config: HttpOptions
    event_types: Callable[[], frozenset[str]] = lambda: BUILT_IN_EVENT_TYPES
    """What `POST /v1/events` accepts: built-in types and custom ones the policies configured
    now (a reload included) read."""
    suppressions: Callable[[], SuppressionEnforcement] = SuppressionEnforcement
    """What the policies configured now (a reload included) do to mail for a suppressed
    address; the timeline says it beside a suppression."""


API: web.AppKey[Api] = web.AppKey("api", Api)
TOKENS: web.AppKey[TokenSet] = web.AppKey("tokens", TokenSet)


def api(request: web.Request) -> Api:
    """The Api of the application serving `request`."""
    return request.app[API]


def refuse_announced_oversize(request: web.Request) -> None:
    """Raise 413 when the request announces a body over `http.max_body_size`.

    aiohttp enforces the limit only while reading, so a 50 MB upload would be read up to the
    limit first; what Content-Length announces is refused before a byte of it is read.
    """
    limit = api(request).config.max_body_size
    length = request.content_length
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)


IDENTITY_KEY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)


def identity(request: web.Request) -> Identity:
    """Who is calling: set by the authenticating middleware before any handler runs."""
    who = request.get(IDENTITY_KEY)
    if not isinstance(who, Identity):  # a route reached without authentication is a bug
        raise TypeError(f"no identity for {request.path}; is the route public by mistake?")
    return who
