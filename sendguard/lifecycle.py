"""Delivery lifecycle events that outbound webhooks subscribe to, and their outbox rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sendguard.message import DeliveryState
from sendguard.value_enum import ValueEnum


class LifecycleEvent(ValueEnum):
    """A delivery state change an outbound webhook can subscribe to."""

    FORWARDED = "forwarded"
    """Queued to be sent now."""
    DELAYED = "delayed"
    """Waiting (a cap, a premise, a schedule) until a time or a fact."""
    HELD = "held"
    """In the review queue (or held by a kill switch)."""
    DROPPED = "dropped"
    """Will never be sent."""
    RELEASED = "released"
    """Out of the review queue or a pause: judged again now."""
    DELIVERED = "delivered"
    """The upstream accepted it."""
    FAILED = "failed"
    """The upstream refused it for good, or it expired."""
    BOUNCED = "bounced"
    """A bounce was reported for it (`POST /v1/events`, type `bounce`, with its message id)."""


def lifecycle_event(previous: DeliveryState | None, state: DeliveryState) -> LifecycleEvent | None:
    """The webhook event a move from `previous` (None: a new delivery) to `state` is, if any.

    `sending` and `deferred` are the dispatcher's business, not a change a tool acts on; a
    delayed delivery judged again and still delayed is no change either.
    """
    if state is DeliveryState.DELAYED:
        if previous is DeliveryState.HELD:
            return LifecycleEvent.RELEASED
        return None if previous is DeliveryState.DELAYED else LifecycleEvent.DELAYED
    if state is previous:
        return None
    return _EVENT_OF.get(state)


_EVENT_OF = {
    DeliveryState.QUEUED: LifecycleEvent.FORWARDED,
    DeliveryState.HELD: LifecycleEvent.HELD,
    DeliveryState.DROPPED: LifecycleEvent.DROPPED,
    DeliveryState.SENT: LifecycleEvent.DELIVERED,
    DeliveryState.FAILED: LifecycleEvent.FAILED,
}


@dataclass(frozen=True)
class WebhookTarget:
    """An outbound webhook as the store sees it: its name (the URL) and the events it wants."""

    name: str
    events: frozenset[LifecycleEvent]


@dataclass(frozen=True)
class OutboundEvent:
    """A lifecycle event waiting in the outbox to be posted to one webhook target."""

    id: int
    target: str
    delivery_id: str
    event: LifecycleEvent
    payload: str
    """The event as JSON, without its `id` (the sender adds it)."""
    created_at: datetime
    attempts: int
