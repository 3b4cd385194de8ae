"""What a route is: one record per HTTP route, from which the router, the authentication
middleware and the OpenAPI document are all derived (the table is `sendguard.ingress.routes`).

Adding a route is adding one `Route` to that table (plus its handler and tests): the router
serves it, the `guard` middleware applies its `auth`, and `/openapi.json` documents its body, query,
answers and errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from sendguard.ingress.http_context import Handler


class Auth(Enum):
    """Who may call a route, and who checks it."""

    TOKEN = "token"  # noqa: S105 -- the name of a kind of credential, not a secret
    """A bearer API token, checked by the middleware before the handler runs."""
    PUBLIC = "public"
    """Anyone (health, readiness, this document)."""
    METRICS = "metrics"
    """Anyone while `http.metrics_public` is true, else a bearer API token."""
    SESSION = "session"
    """The review page's sign-in cookie, checked by the page (sendguard/review_page/)."""
    SENDGRID = "sendgrid"
    """An API token as SendGrid's bearer key, checked by the handler (SendGrid's error shape)."""
    POSTMARK = "postmark"
    """An API token in `X-Postmark-Server-Token`, checked by the handler."""
    MAILGUN = "mailgun"
    """Basic auth `api:<token>`, checked by the handler (Mailgun's error shape)."""
    SIGNED = "signed"
    """An ESP webhook: its signature, secret path or basic auth, checked by the handler."""

    def needs_token(self, metrics_public: bool) -> bool:
        """Whether the middleware requires a bearer API token."""
        return self is Auth.TOKEN or (self is Auth.METRICS and not metrics_public)


@dataclass(frozen=True)
class Body:
    """One accepted request body: its media type and its model (or a JSON schema)."""

    media_type: str
    model: type[BaseModel] | None = None
    schema: Mapping[str, Any] | None = None
    """A JSON schema where no model describes the body (raw MIME, CSV, ESP shapes)."""
    many: bool = False
    """The body may also be an array of the model (a batch)."""


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: an id in this answer names the resource of another operation."""

    operation: str
    parameters: Mapping[str, str]
    """Parameter name to a runtime expression, like `$response.body#/id`."""


@dataclass(frozen=True)
class Answer:
    """One documented answer: what it means and its body (a model, a schema, or none)."""

    description: str
    model: type[BaseModel] | tuple[type[BaseModel], ...] | None = None
    """The body's model; a tuple for one of several (by the request's kind)."""
    media_type: str = "application/json"
    """Empty for an answer without a body."""
    schema: Mapping[str, Any] | None = None
    many: bool = False
    """The body is an array of `model`."""
    links: Mapping[str, Link] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response header name to its description."""
    also: Mapping[str, str] = field(default_factory=dict)
    """Other media types the same status may answer in (a query asks for them), each with
    what it holds; their body is text."""


@dataclass(frozen=True)
class Header:
    """A request header the route reads."""

    name: str
    description: str
    max_length: int


@dataclass(frozen=True)
class Route:
    """One HTTP route, declared once."""

    method: str
    path: str
    handler: Handler
    name: str
    """The OpenAPI operationId (and what links name)."""
    summary: str
    tags: tuple[str, ...]
    answers: Mapping[int, Answer]
    """The answers by status; error statuses not given here are derived (`error_statuses`)
    and answer the error shape."""
    auth: Auth = Auth.TOKEN
    bodies: Sequence[Body] = ()
    body_required: bool = True
    """False where an empty body means `{}` (the review actions)."""
    query: type[BaseModel] | None = None
    """The query parameters, as a model: names, types, enums, formats and limits."""
    headers: Sequence[Header] = ()
    path_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """A path parameter's JSON schema, where it is not any non-empty string."""
    errors: Sequence[int] = ()
    """Error statuses beyond the derived ones (409 for a state conflict, ...)."""
    error: type[BaseModel] | None = None
    """The error body's model when it is not the API's `{"error": ...}` (the ESPs' shapes)."""
    documented: bool = True
    """False for the review page: HTML forms behind a session, not part of the JSON API."""
    stores: bool = True
    """It reads or writes the store, so it may answer 503 when the store is unavailable."""

    @property
    def path_params(self) -> list[str]:
        """The `{name}` parts of the path, in order."""
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    def error_statuses(self) -> list[int]:
        """Every error status the route can answer."""
        statuses = set(self.errors)
        if self.bodies or self.query is not None or self.path_params or self.headers:
            statuses.add(400)
        if self.auth in (Auth.TOKEN, Auth.METRICS):
            statuses.add(401)
        if self.path_params:
            statuses.add(404)
        if self.bodies:
            statuses.add(413)
        if self.stores:
            statuses.add(503)
        return sorted(statuses)


TABLE: web.AppKey[dict[tuple[str, str], Route]] = web.AppKey("routes", dict)
"""Each route's record by its method and aiohttp's path of it."""
BY_ROUTE: web.AppKey[dict[web.AbstractRoute, Route]] = web.AppKey("routes by route", dict)
"""Each of aiohttp's routes to its record (a GET's HEAD too): `route_of` is one look-up."""


def register(app: web.Application, routes: Sequence[Route]) -> None:
    """Serve `routes` on `app` and remember each one's record for the middleware."""
    table = app.setdefault(TABLE, {})
    by_route = app.setdefault(BY_ROUTE, {})
    for route in routes:
        if route.method == "GET":
            resource_route = app.router.add_get(route.path, route.handler)
        else:
            resource_route = app.router.add_route(route.method, route.path, route.handler)
        assert resource_route.resource is not None  # a route added by path has its resource
        table[(route.method, resource_route.resource.canonical)] = route
        methods = {route.method, "HEAD"} if route.method == "GET" else {route.method}
        for added in resource_route.resource:  # the route, and the HEAD add_get adds
            if added.handler is route.handler and added.method in methods:
                by_route[added] = route


def route_of(request: web.Request) -> Route | None:
    """The record of the route `request` matched; None when nothing matched (404, 405).
    Looked up by aiohttp's route object: a key made of the method and the resource's path
    for every request cost some 3,000 instructions."""
    return request.app.get(BY_ROUTE, {}).get(request.match_info.route)
