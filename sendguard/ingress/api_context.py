"""What the world tells sendguard: `POST /v1/facts` and `POST /v1/events`.

Both wake the deliveries that wait on them: a delayed delivery that requires the fact, or any
delayed delivery to the event's recipient, becomes due now and is judged again at once. A
delivery a policy held while waiting on the fact (the context policy's timeout) is judged again
too: it leaves if its premise now holds, and is held again if not.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from sendguard.address import recipient_key
from sendguard.events import Event, event_type
from sendguard.facts import Fact
from sendguard.fields import (
    check_fact_key,
    check_fact_value,
    check_timezone,
    parse_past_time,
)
from sendguard.ingress.http_context import api
from sendguard.ingress.payloads import (
    BadRequest,
    EventPayload,
    FactPayload,
    address_in,
    read_events,
    read_json,
)
from sendguard.ingress.views import when
from sendguard.suppressions import record_events


async def post_fact(request: web.Request) -> web.Response:
    """Record a fact and release (or drop) the deliveries waiting on it."""
    ctx = api(request)
    payload = await read_json(request, FactPayload)
    now = ctx.clock.now()
    observed = (
        parse_past_time(payload.observed_at, field="observed_at", now=now)
        if payload.observed_at is not None
        else now
    )
    check_fact_key(payload.key, field="key")
    check_fact_value(payload.value, field="value")
    if payload.superseded_by is not None:
        check_fact_key(payload.superseded_by, field="superseded_by")
        if payload.superseded_by == payload.key:
            raise BadRequest("superseded_by: a fact cannot supersede itself", "superseded_by")
    if payload.key == "timezone":  # read by quiet hours and reasons: a wrong one is ignored
        check_timezone(payload.value, field="value")
    # Kept as recipients are counted (case folded), so a CRM's `Paula@Prospect.Example`
    # is the person behind a delivery to `paula@prospect.example`.
    contact = recipient_key(address_in(payload.contact, "contact")) if payload.contact else None
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
    """Record engagement or suppression events (one object, or an array answered item by
    item); an unsubscribe, complaint or hard bounce suppresses the address durably, a
    resubscribe lifts it; waiting deliveries to each person wake."""
    ctx = api(request)
    payloads, batch = await read_events(request)
    now = ctx.clock.now()
    accepted = ctx.event_types()
    events = [
        _event(payload, f"[{i}]." if batch else "", now, accepted)
        for i, payload in enumerate(payloads)
    ]
    recorded = await record_events(
        ctx.store,
        [
            (event, payload.bounce_type == "soft")
            for payload, event in zip(payloads, events, strict=True)
        ],
        now,
    )
    if any(result.woken for result in recorded):
        ctx.wake()
    results = [
        {
            "type": str(event.type),
            "recipient": event.recipient,
            "at": when(event.at),
            "woken": result.woken,
            "suppression": result.effect.value if result.effect is not None else None,
        }
        for event, result in zip(events, recorded, strict=True)
    ]
    return web.json_response({"results": results} if batch else results[0], status=202)


def _event(payload: EventPayload, prefix: str, now: datetime, accepted: frozenset[str]) -> Event:
    """The event of one payload item; BadRequest names `[i].field` in a batch."""
    if payload.type not in accepted:
        raise BadRequest(
            f"{prefix}type: unknown event type {payload.type!r}; accepted: "
            + ", ".join(sorted(accepted))
            + " (a custom type is accepted once a policy reads it, e.g. fatigue's engagement)",
            f"{prefix}type",
        )
    at = (
        parse_past_time(payload.at, field=f"{prefix}at", now=now) if payload.at is not None else now
    )
    recipient = address_in(payload.recipient, f"{prefix}recipient")
    return Event(event_type(payload.type), recipient, at, payload.message_id, payload.offer)
