"""Events: what a recipient did, or what happened to their address (engagement, suppression)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EventType(StrEnum):
    """Engagement and suppression events about a recipient."""

    OPEN = "open"
    CLICK = "click"
    REPLY = "reply"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    PURCHASE = "purchase"
    RESUBSCRIBE = "resubscribe"
    DELIVERED = "delivered"


_BUILT_IN: dict[str, EventType] = {t.value: t for t in EventType}


def event_type(name: str) -> EventType | str:
    """A built-in type as its enum member; a configured custom type (`visit`) as it is."""
    return _BUILT_IN.get(name, name)


@dataclass(frozen=True)
class Event:
    """Something a recipient did (or that happened to their address).

    `type` is an `EventType`, or a custom engagement type a configured policy reads.
    """

    type: EventType | str
    recipient: str
    at: datetime
    message_id: str | None = None
    offer: str | None = None
    """What a `purchase` bought (an offer name as in `X-Sendguard-Offer`)."""

    def __init__(
        self,
        type: EventType | str,
        recipient: str,
        at: datetime,
        message_id: str | None = None,
        offer: str | None = None,
    ) -> None:
        # A decision reads one per event in its window: one update of the dict, not a call of
        # object.__setattr__ per field as the generated __init__ of a frozen dataclass does.
        self.__dict__.update(
            type=type, recipient=recipient, at=at, message_id=message_id, offer=offer
        )
