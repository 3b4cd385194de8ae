"""The OpenAPI 3.1 document served at `/openapi.json` (request schemas come from the models)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from sendguard import __version__
from sendguard.ingress.api_simulations import SimulationPayload
from sendguard.ingress.payloads import (
    CampaignApprovalPayload,
    EventPayload,
    FactPayload,
    ReviewPayload,
    SendPayload,
    SuppressionPayload,
)

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
            "required": ["code", "message"],
        }
    },
}

# (method, path, summary, request model, success status, public)
ROUTES: tuple[tuple[str, str, str, type[BaseModel] | None, int, bool], ...] = (
    ("post", "/v1/messages", "Send a message (JSON or message/rfc822)", SendPayload, 202, False),
    (
        "get",
        "/v1/messages/{id}",
        "A message and each delivery's state and reasons",
        None,
        200,
        False,
    ),
    (
        "get",
        "/v1/deliveries",
        "Deliveries, newest first (state, campaign, recipient, since, cursor, limit)",
        None,
        200,
        False,
    ),
    (
        "get",
        "/v1/deliveries/{id}",
        "One delivery with its transitions and reasons",
        None,
        200,
        False,
    ),
    ("post", "/v1/deliveries/{id}/approve", "Release a held delivery", ReviewPayload, 200, False),
    ("post", "/v1/deliveries/{id}/reject", "Drop a held delivery", ReviewPayload, 200, False),
    (
        "post",
        "/v1/campaigns/{name}/approve",
        "Approve a campaign and the content it held (release: all lifts every hold reason)",
        CampaignApprovalPayload,
        200,
        False,
    ),
    ("post", "/v1/campaigns/{name}/reject", "Reject a campaign", ReviewPayload, 200, False),
    (
        "post",
        "/v1/campaigns/{name}/pause",
        "Kill switch: hold a campaign",
        ReviewPayload,
        200,
        False,
    ),
    ("post", "/v1/campaigns/{name}/resume", "Lift the kill switch", ReviewPayload, 200, False),
    ("get", "/v1/campaigns", "Campaigns with counts per delivery state", None, 200, False),
    (
        "post",
        "/v1/pause",
        "Global kill switch: hold every unsent delivery",
        ReviewPayload,
        200,
        False,
    ),
    ("post", "/v1/resume", "Lift the global kill switch", ReviewPayload, 200, False),
    ("get", "/v1/pause", "Whether sending is paused, since when, by whom", None, 200, False),
    (
        "post",
        "/v1/facts",
        "Record a context fact; wakes the deliveries waiting on it",
        FactPayload,
        202,
        False,
    ),
    (
        "post",
        "/v1/events",
        "Record an engagement or suppression event, or an array of them",
        EventPayload,
        202,
        False,
    ),
    (
        "get",
        "/v1/suppressions",
        "Durable suppressions by address (address, reason, after, limit)",
        None,
        200,
        False,
    ),
    (
        "post",
        "/v1/suppressions",
        "Suppress an address (JSON), or import an ESP's CSV export (text/csv, ?reviewer=)",
        SuppressionPayload,
        201,
        False,
    ),
    (
        "delete",
        "/v1/suppressions/{address}",
        "Lift a suppression (audited)",
        ReviewPayload,
        200,
        False,
    ),
    (
        "get",
        "/v1/recipients/{address}/timeline",
        "Everything a person was sent, spared or is waiting for, and why",
        None,
        200,
        False,
    ),
    ("get", "/v1/audit", "Review actions, newest first", None, 200, False),
    (
        "post",
        "/v1/admin/reload",
        "Reload the config (as SIGHUP); what applied, what needs a restart",
        None,
        200,
        False,
    ),
    (
        "get",
        "/v1/policies/shadow",
        "What each shadow policy would have done (since, examples, top)",
        None,
        200,
        False,
    ),
    (
        "post",
        "/v1/simulations",
        "Start a what-if replay of recorded traffic through a candidate config (one at a time)",
        SimulationPayload,
        202,
        False,
    ),
    (
        "get",
        "/v1/simulations/{id}",
        "A simulation's status and, once done, its report (format=json or html)",
        None,
        200,
        False,
    ),
    ("post", "/v3/mail/send", "SendGrid v3 mail/send (Bearer: sendguard token)", None, 202, False),
    ("post", "/email", "Postmark: send one email (X-Postmark-Server-Token)", None, 200, False),
    ("post", "/email/batch", "Postmark: send up to 500 emails", None, 200, False),
    (
        "post",
        "/email/withTemplate",
        "Postmark template send: refused with 422 (stored templates are not rendered)",
        None,
        200,
        False,
    ),
    (
        "post",
        "/email/batchWithTemplates",
        "Postmark template batch: refused with 422 (stored templates are not rendered)",
        None,
        200,
        False,
    ),
    (
        "post",
        "/email/withTemplate/",
        "The same, as postmarker calls it (trailing slash)",
        None,
        200,
        False,
    ),
    (
        "post",
        "/email/batchWithTemplates/",
        "The same, as postmarker calls it (trailing slash)",
        None,
        200,
        False,
    ),
    (
        "post",
        "/v3/{domain}/messages",
        "Mailgun messages, multipart or urlencoded (basic auth api:<token>)",
        None,
        200,
        False,
    ),
    ("post", "/v3/{domain}/messages.mime", "Mailgun messages.mime", None, 200, False),
    (
        "post",
        "/v1/webhooks/sendgrid",
        "SendGrid signed Event Webhook (ECDSA); events recorded as POST /v1/events",
        None,
        200,
        False,
    ),
    (
        "post",
        "/v1/webhooks/postmark",
        "Postmark webhook (basic auth); events recorded as POST /v1/events",
        None,
        200,
        False,
    ),
    (
        "post",
        "/v1/webhooks/postmark/{secret}",
        "Postmark webhook (secret path); events recorded as POST /v1/events",
        None,
        200,
        False,
    ),
    (
        "post",
        "/v1/webhooks/mailgun",
        "Mailgun signed webhook (HMAC-SHA256, 5-minute replay window)",
        None,
        200,
        False,
    ),
    ("get", "/metrics", "Prometheus metrics", None, 200, True),
    ("get", "/healthz", "Liveness", None, 200, True),
    ("get", "/readyz", "Readiness: store and upstream reachable", None, 200, True),
    ("get", "/openapi.json", "This document", None, 200, True),
)


# The ESP-compatible routes authenticate in the ESP's scheme; webhooks by their signature.
_OWN_SECURITY = (
    ("/email", "postmarkServerToken"),
    ("/v3/{domain}/", "mailgunBasic"),
    ("/v1/webhooks/", None),
)


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, model, status, public in ROUTES:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {
                str(status): {"description": "success"},
                **{
                    str(code): {
                        "description": text,
                        "content": {"application/json": {"schema": _ERROR}},
                    }
                    for code, text in (
                        (400, "bad input; `field` names it"),
                        (401, "no or bad token"),
                        (404, "not found"),
                        (409, "state conflict"),
                        (413, "body too large"),
                        (503, "store unavailable"),
                    )
                },
            },
        }
        parameters = [
            {"name": name.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path.split("/")
            if name.startswith("{")
        ]
        if parameters:
            operation["parameters"] = parameters
        if (method, path) == ("post", "/v1/messages"):
            operation["responses"]["422"] = {
                "description": "Idempotency-Key already used with another request",
                "content": {"application/json": {"schema": _ERROR}},
            }
        if model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
            }
        if public:
            operation["security"] = []
        for prefix, scheme in _OWN_SECURITY:
            if path.startswith(prefix):
                operation["security"] = [{scheme: []}] if scheme else []
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "sendguard", "version": __version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "postmarkServerToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Postmark-Server-Token",
                },
                "mailgunBasic": {"type": "http", "scheme": "basic"},
            }
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.Response:
    """Serve the document."""
    return web.json_response(document())


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_get("/openapi.json", openapi)
