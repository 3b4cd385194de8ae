"""Durable suppressions over HTTP: `GET/POST /v1/suppressions`, `DELETE /v1/suppressions/{address}`.

`POST` with a JSON body suppresses one address; with `Content-Type: text/csv` it imports an
ESP's export (a header row with an `email`, `address` or `recipient` column, optional `reason`
and `created_at`). Every change is audited under the authenticated identity (the API token's
name), like the review endpoints; a `reviewer` in the body (`?reviewer=` for a CSV) only
becomes part of the note.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sendguard.address import recipient_key
from sendguard.identity import note_with_claimed_reviewer
from sendguard.ingress.http_context import api, identity
from sendguard.ingress.payloads import (
    BadRequest,
    ReviewPayload,
    SuppressionPayload,
    address_in,
    read_json,
)
from sendguard.ingress.queries import MAX_SUPPRESSIONS
from sendguard.ingress.views import when
from sendguard.review import NotFound
from sendguard.suppressions import (
    CsvError,
    Suppression,
    SuppressionQuery,
    SuppressionReason,
    parse_csv,
)

MAX_SOURCE = 200


def suppression_view(suppression: Suppression) -> dict[str, Any]:
    """One suppression; `address` is the key it is matched by (as recipients are)."""
    return {
        "address": recipient_key(suppression.address),
        "reason": suppression.reason.value,
        "source": suppression.source,
        "created_at": when(suppression.created_at),
        "created_by": suppression.created_by,
        "note": suppression.note,
    }


async def list_suppressions(request: web.Request) -> web.Response:
    """Suppressions by address, paginated (`address`, `reason`, `after`, `limit`)."""
    query = request.query
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit: must be a whole number", "limit") from None
    if not 0 < limit <= MAX_SUPPRESSIONS:
        raise BadRequest(f"limit: must be between 1 and {MAX_SUPPRESSIONS}", "limit")
    reason = None
    if query.get("reason"):
        try:
            reason = SuppressionReason(query["reason"])
        except ValueError:
            allowed = ", ".join(r.value for r in SuppressionReason)
            raise BadRequest(f"reason: must be one of {allowed}", "reason") from None
    address = address_in(query["address"], "address") if query.get("address") else None
    page = await api(request).store.list_suppressions(
        SuppressionQuery(address, reason, query.get("after") or None, limit)
    )
    return web.json_response(
        {"suppressions": [suppression_view(s) for s in page.suppressions], "next": page.next}
    )


async def add_suppression(request: web.Request) -> web.Response:
    """Suppress one address (JSON), or import a CSV export (`Content-Type: text/csv`)."""
    if request.content_type == "text/csv":
        return await _import(request)
    ctx = api(request)
    payload = await read_json(request, SuppressionPayload)
    address = address_in(payload.address, "address")
    now = ctx.clock.now()
    who = identity(request)
    note = note_with_claimed_reviewer(payload.note, payload.reviewer, who)
    item = Suppression(address, SuppressionReason(payload.reason), "api", now, who.name, note)
    (added,) = await ctx.store.add_suppressions([item], now)
    # deliveries waiting or held for this person are judged again now, and dropped
    if await ctx.store.wake_waiting(now, recipient=address, held=added):
        ctx.wake()
    current = await ctx.store.get_suppression(address)
    assert current is not None  # suppressions are only ever lifted by a reviewer or an event
    return web.json_response(
        {"added": added, "suppression": suppression_view(current)}, status=201 if added else 200
    )


async def _import(request: web.Request) -> web.Response:
    ctx = api(request)
    who = identity(request)
    claimed = request.query.get("reviewer", "").strip() or None
    source = "import:" + request.query.get("source", "csv")[:MAX_SOURCE]
    if claimed and claimed != who.name:
        source += f" (reviewer {claimed[:MAX_SOURCE]})"
    try:
        text = (await request.read()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("body: the CSV must be UTF-8", "body") from None
    try:
        parsed = parse_csv(text, source=source, actor=who.name, now=ctx.clock.now())
    except CsvError as exc:
        raise BadRequest(f"body: {exc}", "body") from None
    added = await ctx.store.add_suppressions(parsed.rows, ctx.clock.now())
    count = sum(added)
    return web.json_response(
        {
            "added": count,
            "already_present": len(added) - count + parsed.duplicates,
            "invalid": [{"line": i.line, "message": i.message} for i in parsed.invalid],
            "warnings": [{"line": w.line, "message": w.message} for w in parsed.warnings],
        }
    )


async def lift_suppression(request: web.Request) -> web.Response:
    """Lift one suppression (audited); waiting deliveries to the address wake."""
    ctx = api(request)
    payload = await read_json(request, ReviewPayload)
    address = address_in(request.match_info["address"], "address")
    now = ctx.clock.now()
    who = identity(request)
    note = note_with_claimed_reviewer(payload.note, payload.reviewer, who)
    lifted = await ctx.store.lift_suppression(address, who.name, now, note)
    if lifted is None:
        raise NotFound(f"{recipient_key(address)} is not suppressed")
    if await ctx.store.wake_waiting(now, recipient=address):
        ctx.wake()
    return web.json_response({"lifted": suppression_view(lifted)})
