"""Helpers for testing sendguard and its plugins: a fake clock, deliveries built in one line, and
a harness that runs one policy over a real temporary store.

    async def test_blocks_after_two_sends() -> None:
        clock = FakeClock(datetime(2026, 11, 22, 9, tzinfo=UTC))
        async with PolicyHarness(MyPolicy, options={"limit": 2}, clock=clock) as harness:
            await harness.sent("ann@example.org", at=clock.now() - timedelta(hours=1))
            await harness.event(EventType.CLICK, "ann@example.org")
            verdict = await harness.evaluate(harness.delivery("ann@example.org"))
            assert verdict.action is Action.FORWARD
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel

from sendguard.approvals import Approval, Campaign
from sendguard.content import fingerprints
from sendguard.deliveries import NewDelivery
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import Delivery, DeliveryState, Message, MessageClass, SendguardFields
from sendguard.policy import Policy, PolicyContext
from sendguard.store.base import Store
from sendguard.store.sqlite import SQLiteStore
from sendguard.verdict import Decision, Verdict

__all__ = ["FakeClock", "PolicyHarness", "make_delivery"]

_P = TypeVar("_P", bound=Policy)

_DEFAULT_CONTENT = b"Subject: Offer\r\n\r\nOffer\r\n"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")

    def now(self) -> datetime:
        """The time the clock was last set to."""
        return self._now

    def advance(self, by: timedelta) -> datetime:
        """Move forward by `by`; return the new time."""
        self._now += by
        return self._now

    def set(self, at: datetime) -> None:
        """Jump to `at`."""
        self._now = at


def _message(
    recipient: str,
    at: datetime,
    fields: SendguardFields,
    headers: Mapping[str, str] | None,
    content: bytes | None,
) -> Message:
    fingerprint = fingerprints(content) if content is not None else None
    return Message(
        id=new_id(),
        received_at=at,
        ingress="test",
        mail_from="sender@example.com",
        recipients=(recipient,),
        headers=Headers(tuple((headers or {}).items())),
        fields=fields,
        size=len(content) if content is not None else 0,
        content_hash=fingerprint.text if fingerprint is not None else None,
        links=fingerprint.links if fingerprint is not None else None,
    )


def make_delivery(
    recipient: str = "ann@example.org",
    *,
    fields: SendguardFields | None = None,
    headers: dict[str, str] | None = None,
    at: datetime | None = None,
    state: DeliveryState = DeliveryState.QUEUED,
    **field_values: object,
) -> Delivery:
    """A delivery of a one-recipient message, for policy tests.

    `field_values` are SendguardFields attributes (campaign=..., not_before=...).
    """
    when = at or datetime(2026, 1, 1, tzinfo=UTC)
    if fields is None:
        fields = SendguardFields(**field_values)  # type: ignore[arg-type]
    message = _message(recipient, when, fields, headers, None)
    return Delivery(new_id(), message, recipient, state, when, when)


class PolicyHarness(Generic[_P]):
    """One policy over a real SQLite store in a temporary directory, with a fake clock.

    `options` are validated by the policy's `Options` model exactly as the config's `options:`
    are (a mapping), or given as an instance of it. Record what the policy reads with `sent`,
    `fact`, `event` and `campaign`; build deliveries with `delivery` and judge them with
    `evaluate`, at `clock.now()` unless told otherwise. Use it as `async with`.
    """

    def __init__(
        self,
        policy_class: type[_P],
        options: BaseModel | Mapping[str, Any] | None = None,
        *,
        clock: FakeClock | None = None,
    ) -> None:
        if options is None or isinstance(options, Mapping):
            options = policy_class.Options.model_validate(dict(options or {}))
        self.options = options
        self.policy: _P = policy_class(options)
        self.clock = clock or FakeClock()
        # Content of deliveries built here, given to the policy as the intake does: the message
        # is judged before it is committed.
        self._contents: dict[str, bytes] = {}
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._store: SQLiteStore | None = None

    async def __aenter__(self) -> Self:
        self._directory = tempfile.TemporaryDirectory(prefix="sendguard-harness-")
        self._store = SQLiteStore(Path(self._directory.name) / "sendguard.db")
        await self._store.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    @property
    def store(self) -> Store:
        """The store, for what the helpers do not cover."""
        if self._store is None:
            raise RuntimeError("use the harness as `async with PolicyHarness(...) as harness`")
        return self._store

    def delivery(
        self,
        recipient: str = "ann@example.org",
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        at: datetime | None = None,
        **field_values: Any,
    ) -> Delivery:
        """A delivery of a new one-recipient message received at `at` (default: now).

        `field_values` are SendguardFields attributes (campaign=..., requires=...). With
        `content`, the message has its size and fingerprint, and `ctx.content` returns it.
        """
        when = at or self.clock.now()
        message = _message(recipient, when, SendguardFields(**field_values), headers, content)
        if content is not None:
            self._contents[message.id] = content
        return Delivery(new_id(), message, recipient, DeliveryState.QUEUED, when, when)

    async def sent(
        self,
        recipient: str = "ann@example.org",
        *,
        at: datetime | None = None,
        content: bytes = _DEFAULT_CONTENT,
        message_class: MessageClass = MessageClass.MARKETING,
        **field_values: Any,
    ) -> Delivery:
        """Record a message forwarded to `recipient` at `at` (default: now): it counts in the
        recipient's history, campaign volume and content fingerprints like a real send."""
        when = at or self.clock.now()
        fields = SendguardFields(message_class=message_class, **field_values)
        message = _message(recipient, when, fields, None, content)
        delivery = Delivery(new_id(), message, recipient, DeliveryState.QUEUED, when, when)
        forward = NewDelivery(
            delivery.id, recipient, DeliveryState.QUEUED, "ok", Decision(Verdict.forward()), when
        )
        await self.store.add_message(message, content, [forward])
        return delivery

    async def fact(
        self,
        key: str,
        value: str,
        *,
        contact: str | None = None,
        observed_at: datetime | None = None,
        superseded_by: str | None = None,
    ) -> Fact:
        """Record a fact, observed at `observed_at` (default: now); `superseded_by` names the
        fact that replaces it (a rescheduled meeting's new one), as `POST /v1/facts` takes it."""
        fact = Fact(
            key=key,
            value=value,
            observed_at=observed_at or self.clock.now(),
            contact=contact,
            superseded_by=superseded_by,
        )
        await self.store.put_fact(fact)
        return fact

    async def event(
        self,
        kind: EventType,
        recipient: str,
        *,
        at: datetime | None = None,
        message_id: str | None = None,
        offer: str | None = None,
    ) -> Event:
        """Record an engagement or suppression event, at `at` (default: now)."""
        event = Event(
            type=kind,
            recipient=recipient,
            at=at or self.clock.now(),
            message_id=message_id,
            offer=offer,
        )
        await self.store.add_event(event)
        return event

    async def campaign(
        self,
        name: str,
        approval: Approval | None = None,
        *,
        paused: bool = False,
        by: str = "reviewer",
    ) -> Campaign:
        """Record what reviewers decided about campaign `name`, now."""
        campaign = Campaign(name, approval, paused, self.clock.now(), by)
        await self.store.set_campaign(campaign)
        return campaign

    def context(self, at: datetime | None = None) -> PolicyContext:
        """The policy's view of the store at `at` (default: now)."""
        return PolicyContext(self.store, at or self.clock.now(), self._contents)

    async def evaluate(self, delivery: Delivery, *, at: datetime | None = None) -> Verdict:
        """The policy's verdict on `delivery` at `at` (default: now)."""
        verdict = await self.policy.evaluate(delivery, self.context(at))
        if not isinstance(verdict, Verdict):
            raise TypeError(f"evaluate returned {type(verdict).__name__}, not a Verdict")
        return verdict
