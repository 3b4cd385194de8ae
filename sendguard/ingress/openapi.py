"""The OpenAPI 3.1 document served at `/openapi.json`, derived from the route table.

Request bodies, query parameters and answers come from the routes' pydantic models (one
`components.schemas` entry each); error answers are derived from what a route takes and who
may call it (`Route.error_statuses`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sendguard import __version__
from sendguard.ingress.answers import ErrorAnswer
from sendguard.ingress.payloads import MAX_EVENTS
from sendguard.ingress.route import Answer, Auth, Route


class LazyDocument:
    """The document of `routes`, built on its first request: building every schema takes a
    tenth of a second of CPU that a server need not spend before it accepts traffic."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = routes
        self._document: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        if self._document is None:
            self._document = document(self._routes)
        return self._document


DOCUMENT: web.AppKey[LazyDocument] = web.AppKey("openapi", LazyDocument)

_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "bad input; `field` names it",
    401: "no or bad credentials",
    404: "not found",
    409: "state conflict (like approving a delivery that is not held)",
    413: "body larger than http.max_body_size",
    422: "refused (see the message)",
    503: "the store is unavailable; retry later",
}
# Who may call: the bearer token (the document's default) unless the route says otherwise.
_SECURITY: Mapping[Auth, list[dict[str, list[str]]] | None] = {
    Auth.TOKEN: None,
    Auth.PUBLIC: [],
    Auth.METRICS: [{}, {"bearer": []}],
    Auth.SENDGRID: [{"bearer": []}],
    Auth.POSTMARK: [{"postmarkServerToken": []}],
    Auth.MAILGUN: [{"mailgunBasic": []}],
    Auth.SIGNED: [],
}


def _models(routes: Sequence[Route]) -> Iterator[type[BaseModel]]:
    yield ErrorAnswer
    for route in routes:
        for body in route.bodies:
            if body.model is not None:
                yield body.model
        if route.query is not None:
            yield route.query
        if route.error is not None:
            yield route.error
        for answer in route.answers.values():
            if isinstance(answer.model, tuple):
                yield from answer.model
            elif answer.model is not None:
                yield answer.model


class _Schemas:
    """Every model's JSON schema under `components.schemas`, by reference."""

    def __init__(self, routes: Sequence[Route]) -> None:
        models = list(dict.fromkeys(_models(routes)))
        refs, defs = models_json_schema(
            [(m, "validation") for m in models], by_alias=True, ref_template=_REF
        )
        self.refs = {model: refs[(model, "validation")] for model in models}
        self.components: dict[str, Any] = defs.get("$defs", {})

    def of(self, model: type[BaseModel]) -> dict[str, Any]:
        return dict(self.refs[model])

    def resolved(self, model: type[BaseModel]) -> dict[str, Any]:
        name = str(self.refs[model]["$ref"]).rsplit("/", 1)[1]
        schema: dict[str, Any] = self.components[name]
        return schema


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never null: drop the `null` branch."""
    kept = {k: v for k, v in schema.items() if (k, v) != ("default", None)}
    if "anyOf" not in schema:
        return kept
    branches = [s for s in schema["anyOf"] if s.get("type") != "null"]
    if len(branches) != 1:
        return {**kept, "anyOf": branches}
    del kept["anyOf"]
    return {**kept, **branches[0]}


def _query_parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    if route.query is None:
        return []
    model = schemas.resolved(route.query)
    required = set(model.get("required", ()))
    out = []
    for name, prop in model.get("properties", {}).items():
        schema = _without_null(dict(prop))
        description = schema.pop("description", "")
        schema.pop("title", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": description,
            "schema": schema,
        }
        if schema.get("type") == "array":
            parameter["explode"] = True
        out.append(parameter)
    return out


def _parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in route.path_params:
        schema = dict(route.path_schemas.get(name, {"type": "string", "minLength": 1}))
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    out.extend(_query_parameters(route, schemas))
    out.extend(
        {
            "name": header.name,
            "in": "header",
            "required": False,
            "description": header.description,
            "schema": {"type": "string", "minLength": 1, "maxLength": header.max_length},
        }
        for header in route.headers
    )
    return out


def _request_body(route: Route, schemas: _Schemas) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for body in route.bodies:
        schema = schemas.of(body.model) if body.model is not None else dict(body.schema or {})
        if body.many:
            batch = {"type": "array", "items": schema, "minItems": 1, "maxItems": MAX_EVENTS}
            schema = {"oneOf": [schema, batch]}
        content[body.media_type] = {"schema": schema}
    return {"required": route.body_required, "content": content}


def _answer(answer: Answer, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in answer.headers.items()
        }
    if answer.links:
        out["links"] = {
            name: {"operationId": link.operation, "parameters": dict(link.parameters)}
            for name, link in answer.links.items()
        }
    if not answer.media_type:
        return out
    if isinstance(answer.model, tuple):
        schema: dict[str, Any] = {"oneOf": [schemas.of(m) for m in answer.model]}
    elif answer.model is not None:
        schema = schemas.of(answer.model)
    else:
        schema = dict(answer.schema or {"type": "string"})
    if answer.many:
        schema = {"type": "array", "items": schema}
    out["content"] = {answer.media_type: {"schema": schema}}
    for media_type, what in answer.also.items():
        out["content"][media_type] = {"schema": {"type": "string", "description": what}}
    return out


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    responses = {str(status): _answer(a, schemas) for status, a in sorted(route.answers.items())}
    error = schemas.of(route.error or ErrorAnswer)
    for status in route.error_statuses():
        responses.setdefault(
            str(status),
            {"description": _ERRORS[status], "content": {"application/json": {"schema": error}}},
        )
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": list(route.tags),
        "responses": responses,
    }
    if route.handler.__doc__:
        operation["description"] = " ".join(route.handler.__doc__.split())
    if parameters := _parameters(route, schemas):
        operation["parameters"] = parameters
    if route.bodies:
        operation["requestBody"] = _request_body(route, schemas)
    security = _SECURITY.get(route.auth)
    if security is not None:
        operation["security"] = security
    return operation


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI document of `routes` (those marked `documented`)."""
    documented = [r for r in routes if r.documented]
    schemas = _Schemas(documented)
    paths: dict[str, dict[str, Any]] = {}
    for route in documented:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sendguard",
            "version": __version__,
            "description": "Checks every outbound message per recipient with policies before"
            ' it reaches the ESP. Errors answer `{"error": {"code", "message", "field"}}`.',
        },
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "postmarkServerToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Postmark-Server-Token",
                },
                "mailgunBasic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def serve(request: web.Request) -> web.Response:
    """The OpenAPI document of this server's routes."""
    return web.json_response(request.app[DOCUMENT].get())
