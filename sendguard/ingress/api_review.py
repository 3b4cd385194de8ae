"""The review queue over HTTP: approve or reject deliveries and campaigns, pause, audit.

Every action is recorded under the authenticated identity (the API token's name); a
`reviewer` in the body only becomes part of the note.
"""

from __future__ import annotations

from aiohttp import web

from sendguard.approvals import GlobalPause
from sendguard.identity import note_with_claimed_reviewer
from sendguard.ingress.api_send import view_of
from sendguard.ingress.http_context import Handler, api, identity
from sendguard.ingress.payloads import (
    BadRequest,
    CampaignApprovalPayload,
    ReviewPayload,
    read_json,
)
from sendguard.ingress.queries import MAX_AUDIT
from sendguard.ingress.views import audit_view, campaign_view, when
from sendguard.review import APPROVE, CampaignAction, PauseOutcome


def _actor(request: web.Request, payload: ReviewPayload) -> tuple[str, str]:
    """Who acts (the authenticated name) and the note to record."""
    who = identity(request)
    return who.name, note_with_claimed_reviewer(payload.note, payload.reviewer, who)


def delivery_action(action: str) -> Handler:
    """approve: release a held delivery; reject: drop it (409 unless it is held)."""

    async def handle(request: web.Request) -> web.Response:
        payload = await read_json(request, ReviewPayload)
        review = api(request).review
        act = review.approve_delivery if action == "approve" else review.reject_delivery
        delivery = await act(request.match_info["id"], *_actor(request, payload))
        return web.json_response(await view_of(request, delivery))

    return handle


def campaign_action(action: CampaignAction) -> Handler:
    """approve (release what it held), reject (drop what is unsent), pause (the kill switch:
    hold every unsent and new delivery) or resume a campaign."""

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        review = api(request).review
        if action is APPROVE:
            approval = await read_json(request, CampaignApprovalPayload)
            outcome = await review.on_campaign(
                action, name, *_actor(request, approval), release_all=approval.release == "all"
            )
        else:
            payload = await read_json(request, ReviewPayload)
            outcome = await review.on_campaign(action, name, *_actor(request, payload))
        return web.json_response(
            {
                "campaign": outcome.campaign.name,
                "action": action.verb,
                "deliveries": outcome.count,
                "approval": outcome.campaign.approval.value if outcome.campaign.approval else None,
                "paused": outcome.campaign.paused,
            }
        )

    return handle


async def list_campaigns(request: web.Request) -> web.Response:
    """Campaigns with their review state and counts per delivery state, and the global pause."""
    ctx = api(request)
    summaries = await ctx.store.campaigns()
    return web.json_response(
        {
            "campaigns": [campaign_view(s) for s in summaries],
            "pause": _pause_view(await ctx.review.pause_state()),
        }
    )


def _pause_view(pause: GlobalPause) -> dict[str, object]:
    return {
        "paused": pause.paused,
        "updated_at": when(pause.updated_at),
        "updated_by": pause.updated_by,
        "note": pause.note,
    }


def _pause_answer(outcome: PauseOutcome) -> web.Response:
    return web.json_response({**_pause_view(outcome.pause), "deliveries": outcome.count})


async def pause_all(request: web.Request) -> web.Response:
    """The global kill switch: hold every unsent delivery and every new one until resumed."""
    payload = await read_json(request, ReviewPayload)
    return _pause_answer(await api(request).review.pause_all(*_actor(request, payload)))


async def resume_all(request: web.Request) -> web.Response:
    """Lift the global kill switch: what it held is judged again now."""
    payload = await read_json(request, ReviewPayload)
    return _pause_answer(await api(request).review.resume_all(*_actor(request, payload)))


async def pause_state(request: web.Request) -> web.Response:
    """Whether sending is paused, since when and by whom."""
    return web.json_response(_pause_view(await api(request).review.pause_state()))


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
