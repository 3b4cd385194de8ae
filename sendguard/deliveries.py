"""What is kept about deliveries besides the delivery itself: how a new one is committed, its
state changes, the record of what happened to it, listings of them, and the send history that
caps and repetition count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sendguard.esp_request import EspRequest
from sendguard.message import (
    Delivery,
    DeliveryState,
    HoldOrigin,
    Message,
    MessageClass,
    Transition,
)
from sendguard.verdict import Decision, PolicyOutcome


@dataclass(frozen=True)
class NewDelivery:
    """A delivery as the ingress decided it, ready to be committed with its message."""

    id: str
    recipient: str
    state: DeliveryState
    reason: str
    decision: Decision
    due_at: datetime | None = None
    hold_origin: HoldOrigin | None = None
    resend_key: int | None = None
    """The key a retransmission of its message would have (sendguard/resend.py), kept with
    the delivery so a copy sent again to its recipient is recognised; None: not checked."""


@dataclass(frozen=True)
class NewMessage:
    """A message as the ingress decided it, with its content, its deliveries and the ESP
    request it came in as (if any), ready to be committed (`IntakeWrites.add_messages`)."""

    message: Message
    content: bytes
    deliveries: Sequence[NewDelivery]
    esp_request: EspRequest | None = None


def sends_now(new: NewDelivery, at: datetime) -> bool:
    """Whether `new`, decided at `at`, is to be sent at once (what an `IntakeClaim` takes)."""
    return new.state is DeliveryState.QUEUED and (new.due_at is None or new.due_at <= at)


@dataclass(frozen=True)
class IntakeClaim:
    """Deliveries to send now, claimed by the dispatcher of this process as they are committed
    (`IntakeWrites.add_message`): no separate claim, no wake-up, no look for what is due."""

    owner: str
    lease_until: datetime
    """As a claim's lease (`WorkQueue.claim_due`): past it, another may take the delivery."""


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to a request that carried an `Idempotency-Key`."""

    key: str
    message_id: str
    response: bytes
    reusable_before: datetime | None = None
    """An earlier use of the key older than this has expired and may be replaced."""
    fingerprint: str | None = None
    """A digest of the request the key was first used with: another request under the same
    key is refused (422), not answered with this response."""


@dataclass(frozen=True)
class Change:
    """A state change of one delivery, with the guards that make it safe under concurrency."""

    to: DeliveryState
    reason: str
    at: datetime
    expect: frozenset[DeliveryState] | None = None
    """The change applies only if the delivery is in one of these states (else `Conflict`)."""
    owner: str | None = None
    """The change applies only if this owner still holds the claim (else `Conflict`)."""
    due_at: datetime | None = None
    error: str | None = None
    decision: Decision | None = None
    """Policy outcomes to record with the change (a re-evaluation)."""
    attempt: bool = False
    """Count this change as an attempt to send (entering `sending`)."""
    keep_claim: bool = False
    """Keep the owner's claim (entering `sending` always keeps it)."""
    approved_by: str | None = None
    """A reviewer released the delivery; kept from then on."""
    hold_origin: HoldOrigin | None = None
    """With `to=held`: why (a policy's verdict by default)."""
    override_by: str | None = None
    """A reviewer approved a delivery the context policy held: an override of its premises,
    kept from then on."""


@dataclass(frozen=True)
class RecordedOutcome:
    """A policy outcome as kept with a delivery, with when it was decided."""

    at: datetime
    outcome: PolicyOutcome


@dataclass(frozen=True)
class DeliveryRecord:
    """What happened to one delivery: every state it went through and every policy outcome
    recorded for it, oldest first."""

    transitions: Sequence[Transition] = ()
    outcomes: Sequence[RecordedOutcome] = ()


@dataclass(frozen=True)
class HistoryEntry:
    """A send reserved or made to a recipient; what caps and repetition count."""

    delivery_id: str
    recipient: str
    campaign: str | None
    message_class: MessageClass
    content_hash: str | None
    at: datetime
    sent: bool
    offer: str | None = None
    """The offer the message made (`X-Sendguard-Offer`), if it named one."""

    def __init__(
        self,
        delivery_id: str,
        recipient: str,
        campaign: str | None,
        message_class: MessageClass,
        content_hash: str | None,
        at: datetime,
        sent: bool,
        offer: str | None = None,
    ) -> None:
        # A decision reads one of these per send in its window. The generated __init__ of a
        # frozen dataclass sets each field with a call of object.__setattr__; one update of
        # the instance's dict does the same at half the cost.
        self.__dict__.update(
            delivery_id=delivery_id,
            recipient=recipient,
            campaign=campaign,
            message_class=message_class,
            content_hash=content_hash,
            at=at,
            sent=sent,
            offer=offer,
        )


@dataclass(frozen=True)
class DeliveryQuery:
    """Filters for listing deliveries; results come newest first, `after` is the cursor."""

    state: DeliveryState | None = None
    campaign: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    after: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class DeliveryPage:
    """One page of a delivery listing; `next` is the cursor for the following page."""

    deliveries: Sequence[Delivery]
    next: str | None = None
