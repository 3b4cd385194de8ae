from __future__ import annotations

from aiohttp import web

from sendguard.ingress.http import PUBLIC, add_routes
from sendguard.ingress.openapi import ROUTES, document


def test_openapi_documents_exactly_the_routes() -> None:
    app = web.Application()
    add_routes(app.router)
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {(m.upper(), p) for p, ops in document()["paths"].items() for m in ops}
    assert routes == documented


def test_public_routes_are_marked_public_in_the_document() -> None:
    public = {path for _, path, _, _, _, is_public in ROUTES if is_public}
    assert public == PUBLIC | {"/metrics"}
    doc = document()
    assert doc["openapi"] == "3.1.0"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/v1/messages"]["post"]
    body = doc["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    assert "from" in body["schema"]["properties"]
