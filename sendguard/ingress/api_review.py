"""The review queue over HTTP: approve or reject deliveries and campaigns, pause, audit."""

from __future__ import annotations

from aiohttp import web

from sendguard.ingress.api_send import view_of
from sendguard.ingress.http_context import api
from sendguard.ingress.payloads import BadRequest, ReviewPayload, read_json
from sendguard.ingress.views import audit_view, campaign_view
from sendguard.review import Outcome

MAX_AUDIT = 1000


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_post("/v1/deliveries/{id}/approve", approve_delivery)
    router.add_post("/v1/deliveries/{id}/reject", reject_delivery)
    router.add_post("/v1/campaigns/{name}/approve", approve_campaign)
    router.add_post("/v1/campaigns/{name}/reject", reject_campaign)
    router.add_post("/v1/campaigns/{name}/pause", pause_campaign)
    router.add_post("/v1/campaigns/{name}/resume", resume_campaign)
    router.add_get("/v1/campaigns", list_campaigns)
    router.add_get("/v1/audit", audit)


async def approve_delivery(request: web.Request) -> web.Response:
    """Release a held delivery (409 unless it is held)."""
    payload = await read_json(request, ReviewPayload)
    delivery = await api(request).review.approve_delivery(
        request.match_info["id"], payload.reviewer, payload.note
    )
    return web.json_response(await view_of(request, delivery))


async def reject_delivery(request: web.Request) -> web.Response:
    """Drop a held delivery (409 unless it is held)."""
    payload = await read_json(request, ReviewPayload)
    delivery = await api(request).review.reject_delivery(
        request.match_info["id"], payload.reviewer, payload.note
    )
    return web.json_response(await view_of(request, delivery))


def _outcome(outcome: Outcome, action: str) -> web.Response:
    return web.json_response(
        {
            "campaign": outcome.campaign.name,
            "action": action,
            "deliveries": outcome.count,
            "approval": outcome.campaign.approval.value if outcome.campaign.approval else None,
            "paused": outcome.campaign.paused,
        }
    )


async def approve_campaign(request: web.Request) -> web.Response:
    """Approve a campaign: release what it held; later messages are not held for it."""
    payload = await read_json(request, ReviewPayload)
    name = request.match_info["name"]
    return _outcome(
        await api(request).review.approve_campaign(name, payload.reviewer, payload.note),
        "approve",
    )


async def reject_campaign(request: web.Request) -> web.Response:
    """Reject a campaign: drop everything of it not yet sent."""
    payload = await read_json(request, ReviewPayload)
    name = request.match_info["name"]
    return _outcome(
        await api(request).review.reject_campaign(name, payload.reviewer, payload.note),
        "reject",
    )


async def pause_campaign(request: web.Request) -> web.Response:
    """The kill switch: hold every unsent and every new delivery of the campaign."""
    payload = await read_json(request, ReviewPayload)
    name = request.match_info["name"]
    return _outcome(
        await api(request).review.pause_campaign(name, payload.reviewer, payload.note),
        "pause",
    )


async def resume_campaign(request: web.Request) -> web.Response:
    """Lift the kill switch."""
    payload = await read_json(request, ReviewPayload)
    name = request.match_info["name"]
    return _outcome(
        await api(request).review.resume_campaign(name, payload.reviewer, payload.note),
        "resume",
    )


async def list_campaigns(request: web.Request) -> web.Response:
    """Campaigns with their review state and counts per delivery state."""
    summaries = await api(request).store.campaigns()
    return web.json_response({"campaigns": [campaign_view(s) for s in summaries]})


async def audit(request: web.Request) -> web.Response:
    """Who approved, rejected, paused or resumed what, when; newest first."""
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit: must be a whole number", "limit") from None
    if not 0 < limit <= MAX_AUDIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_AUDIT}", "limit")
    entries = await api(request).store.audit(limit)
    return web.json_response({"entries": [audit_view(e) for e in entries]})
