"""Message and Delivery: what came in, and the per-recipient unit that policies judge.

A message is stored once; each recipient gets its own delivery, which moves through the states
below. Every transition is recorded with its time and reason.

    queued ──> sending ──> sent
      ^           │
      │           └──> deferred ──> (sending again) ... ──> failed
    delayed ──(re-evaluated when due)──> queued | delayed | held | dropped
    held ──(review)──> queued | dropped
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from sendguard.headers import Headers
from sendguard.value_enum import ValueEnum

if TYPE_CHECKING:
    from sendguard.fields import Field as FieldSpec

_T = TypeVar("_T")

__all__ = [
    "Delivery",
    "DeliveryState",
    "HoldExpiry",
    "HoldOrigin",
    "Match",
    "Message",
    "MessageClass",
    "OnTimeout",
    "Requirement",
    "SendguardFields",
    "Transition",
]


class DeliveryState(ValueEnum):
    """Where a delivery stands."""

    QUEUED = "queued"
    DELAYED = "delayed"
    HELD = "held"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    DROPPED = "dropped"


class HoldOrigin(ValueEnum):
    """Why a held delivery is held: it waits for a review, or for the kill switch's resume."""

    POLICY = "policy"
    """A policy's verdict: a reviewer approves or rejects it; its review may expire."""
    PAUSE = "pause"
    """A campaign pause or the global pause: resuming releases it; it never expires."""


class HoldExpiry(StrEnum):
    """What becomes of a delivery held by a policy that nobody reviews in time
    (`review.on_hold_expiry`)."""

    DROP = "drop"
    FORWARD = "forward"


class MessageClass(ValueEnum):
    """What kind of mail this is; caps and fatigue exempt transactional mail by default."""

    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"


class OnTimeout(StrEnum):
    """What becomes of a delivery whose premises are still unsettled when its wait ends."""

    HOLD = "hold"
    DROP = "drop"
    FORWARD = "forward"


class Match(StrEnum):
    """How a premise compares a fact's value with the values it names."""

    EQUAL = "="
    NOT_EQUAL = "!="
    ONE_OF = "in"


@dataclass(frozen=True)
class Requirement:
    """A premise about a fact: `key=value`, `key!=value` or `key in a|b`, optionally
    `; after=<time>` (a fact observed earlier does not count).

    `value` is the text after the operator; several values are separated by `|`.
    """

    key: str
    value: str
    match: Match = Match.EQUAL
    after: datetime | None = None

    @property
    def values(self) -> tuple[str, ...]:
        """The values the premise names."""
        return tuple(self.value.split("|"))

    def holds(self, value: str) -> bool:
        """Whether a fact with `value` makes this premise true."""
        if self.match is Match.NOT_EQUAL:
            return value not in self.values
        return value in self.values

    def __str__(self) -> str:
        op = " in " if self.match is Match.ONE_OF else self.match.value
        after = f"; after={self.after.isoformat()}" if self.after is not None else ""
        return f"{self.key}{op}{self.value}{after}"


@dataclass(frozen=True)
class SendguardFields:
    """What sendguard reads from a message's headers (or the HTTP payload) to judge it."""

    campaign: str | None = None
    message_class: MessageClass = MessageClass.MARKETING
    requires: tuple[Requirement, ...] = ()
    wait: timedelta | None = None
    data_as_of: datetime | None = None
    timezone: str | None = None
    not_before: datetime | None = None
    offer: str | None = None
    """What the message offers (`X-Sendguard-Offer`): repetition counts it, a purchase ends it.
    A campaign is a series (a newsletter); an offer is what must not be pushed again and again."""
    unless: tuple[Requirement, ...] = ()
    """Negative premises: the message is not sent while one of them is true."""
    on_timeout: OnTimeout | None = None
    """What the context policy does when the wait ends (else its configured `on_timeout`)."""
    others: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """The values of fields added to `sendguard.fields.FIELDS` without an attribute here."""

    def get(self, spec: FieldSpec[_T]) -> _T:
        """The value of a field of `sendguard.fields.FIELDS`, typed by its record."""
        # The record's type parameter says what its value is; the mapping cannot.
        if spec.name in self.others:
            value: _T = self.others[spec.name]
            return value
        found: _T = getattr(self, spec.name, spec.default)
        return found


@dataclass(frozen=True)
class Message:
    """An accepted message without its content (content is read only when it is sent)."""

    id: str
    received_at: datetime
    ingress: str
    mail_from: str
    recipients: tuple[str, ...]
    headers: Headers
    fields: SendguardFields = field(default_factory=SendguardFields)
    size: int = 0
    content_hash: str | None = None
    """A fingerprint of the subject and text, blind to greetings and tracking parameters."""
    smtputf8: bool = False
    """The client sent it with SMTPUTF8 (RFC 6531): UTF-8 addresses or headers."""
    body_8bit: bool = False
    """The client declared BODY=8BITMIME (RFC 6152), or the content has 8-bit bytes."""
    links: str | None = None
    """Where it points: the hosts of its links and embeds (sendguard/links.py, stored form);
    None for a message stored before schema 14 (read from its content when needed)."""

    @property
    def subject(self) -> str:
        """The decoded Subject header, or an empty string."""
        return self.headers.get("Subject") or ""


@dataclass(frozen=True)
class Transition:
    """One step in a delivery's life."""

    at: datetime
    state: DeliveryState
    reason: str


@dataclass(frozen=True)
class Delivery:
    """One recipient of one message: the unit that policies judge and the dispatcher sends."""

    id: str
    message: Message
    recipient: str
    state: DeliveryState
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None = None
    attempts: int = 0
    first_attempt_at: datetime | None = None
    last_error: str | None = None
    approved_by: str | None = None
    """The reviewer who released this delivery from the review queue, if one did."""
    hold_origin: HoldOrigin | None = None
    """Why a held delivery is held (only set while it is held)."""
    override_by: str | None = None
    """The reviewer who approved this delivery although its premises were unmet (the context
    policy held it): the context policy no longer checks them."""

    @property
    def campaign(self) -> str | None:
        """The campaign of the message this delivery belongs to."""
        return self.message.fields.campaign
