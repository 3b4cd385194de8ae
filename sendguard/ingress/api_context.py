"""What the world tells sendguard: `POST /v1/facts` and `POST /v1/events`.

Both wake the deliveries that wait on them: a delayed delivery that requires the fact, or any
delayed delivery to the event's recipient, becomes due now and is judged again at once. A
delivery a policy held while waiting on the fact (the context policy's timeout) is judged again
too: it leaves if its premise now holds, and is held again if not.
"""

from __future__ import annotations

from aiohttp import web

from sendguard.address import recipient_key, validate_address
from sendguard.errors import InvalidAddress
from sendguard.fields import parse_time
from sendguard.ingress.http_context import api
from sendguard.ingress.payloads import BadRequest, EventPayload, FactPayload, read_json
from sendguard.ingress.views import when
from sendguard.store.base import Event, EventType, Fact


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
    router.add_post("/v1/facts", post_fact)
    router.add_post("/v1/events", post_event)


def _address(value: str, field: str) -> str:
    try:
        return validate_address(value)
    except InvalidAddress as exc:
        raise BadRequest(f"{field}: {exc}", field) from None


async def post_fact(request: web.Request) -> web.Response:
    """Record a fact and release (or drop) the deliveries waiting on it."""
    ctx = api(request)
    payload = await read_json(request, FactPayload)
    now = ctx.clock.now()
    observed = parse_time(payload.observed_at, field="observed_at") if payload.observed_at else now
    # Kept as recipients are counted (case folded), so a CRM's `Paula@Prospect.Example`
    # is the person behind a delivery to `paula@prospect.example`.
    contact = recipient_key(_address(payload.contact, "contact")) if payload.contact else None
    fact = Fact(payload.key, payload.value, observed, contact, payload.superseded_by)
    await ctx.store.put_fact(fact)
    woken = await ctx.store.wake_waiting(now, fact_key=payload.key, contact=contact)
    if woken:
        ctx.wake()
    return web.json_response(
        {
            "key": payload.key,
            "value": payload.value,
            "contact": contact,
            "observed_at": when(observed),
            "superseded_by": payload.superseded_by,
            "successor": fact.successor,
            "woken": woken,
        },
        status=202,
    )


async def post_event(request: web.Request) -> web.Response:
    """Record an engagement or suppression event; waiting deliveries to that person wake."""
    ctx = api(request)
    payload = await read_json(request, EventPayload)
    now = ctx.clock.now()
    at = parse_time(payload.at, field="at") if payload.at else now
    recipient = _address(payload.recipient, "recipient")
    await ctx.store.add_event(
        Event(EventType(payload.type), recipient, at, payload.message_id, payload.offer)
    )
    woken = await ctx.store.wake_waiting(now, recipient=recipient)
    if woken:
        ctx.wake()
    return web.json_response(
        {"type": payload.type, "recipient": recipient, "at": when(at), "woken": woken},
        status=202,
    )
