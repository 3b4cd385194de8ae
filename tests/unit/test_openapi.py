"""The route table feeds the router, the authentication and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from openapi_spec_validator import validate

from sendguard.ingress.answers import Health
from sendguard.ingress.openapi import LazyDocument, document
from sendguard.ingress.route import TABLE, Answer, Auth, Route, register
from sendguard.ingress.routes import ROUTES


def _served(routes: tuple[Route, ...]) -> set[tuple[str, str]]:
    app = web.Application()
    register(app, routes)
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }


def test_the_router_and_the_document_come_from_one_table() -> None:
    documented = {(m.upper(), p) for p, ops in document(ROUTES)["paths"].items() for m in ops}
    undocumented = {(r.method, r.path) for r in ROUTES if not r.documented}
    assert _served(ROUTES) == documented | undocumented
    assert len(documented | undocumented) == len(ROUTES)  # each route declared once


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document(ROUTES)
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_auth_in_the_document_is_the_routes_auth() -> None:
    paths = document(ROUTES)["paths"]
    for route in (r for r in ROUTES if r.documented):
        operation = paths[route.path][route.method.lower()]
        if route.auth is Auth.TOKEN:
            assert "security" not in operation  # the document's default: the bearer token
            assert "401" in operation["responses"]
        if route.auth is Auth.PUBLIC:
            assert operation["security"] == []
    assert paths["/metrics"]["get"]["security"] == [{}, {"bearer": []}]


def test_every_json_answer_has_a_schema() -> None:
    for path, operations in document(ROUTES)["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                for media, content in answer.get("content", {}).items():
                    if media == "application/json":
                        assert content["schema"], (method, path, status)


def test_send_documents_both_bodies_the_key_and_the_envelope() -> None:
    send = document(ROUTES)["paths"]["/v1/messages"]["post"]
    assert set(send["requestBody"]["content"]) == {"application/json", "message/rfc822"}
    parameters = {p["name"]: p for p in send["parameters"]}
    assert parameters["Idempotency-Key"]["in"] == "header"
    assert parameters["to"]["schema"]["items"]["format"] == "email"
    assert send["responses"]["202"]["links"]["GetMessage"]["operationId"] == "getMessage"
    assert "422" in send["responses"]


def test_query_parameters_have_types_enums_and_limits() -> None:
    listing = document(ROUTES)["paths"]["/v1/deliveries"]["get"]
    parameters = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    assert parameters["state"] == {"$ref": "#/components/schemas/DeliveryState"}
    assert parameters["since"]["format"] == "date-time"


async def _healthy(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def test_adding_a_route_is_one_entry() -> None:
    extra = Route(
        "GET",
        "/v1/example",
        _healthy,
        "example",
        "An example",
        ("health",),
        {200: Answer("fine", Health)},
        auth=Auth.PUBLIC,
        stores=False,
    )
    routes = (*ROUTES, extra)
    assert ("GET", "/v1/example") in _served(routes)
    operation: dict[str, Any] = document(routes)["paths"]["/v1/example"]["get"]
    assert operation["security"] == []
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"
    }
    app = web.Application()
    register(app, routes)
    assert app[TABLE][("GET", "/v1/example")] is extra


def test_the_served_document_is_built_on_its_first_request_only() -> None:
    """A server builds no schema before it accepts traffic; the first `/openapi.json` builds
    the document of its routes, later ones answer that same document."""
    lazy = LazyDocument(ROUTES)
    assert lazy._document is None  # nothing built with the app
    first = lazy.get()
    assert first == document(ROUTES)
    assert lazy.get() is first
