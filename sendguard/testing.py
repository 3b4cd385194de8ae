"""Helpers for testing sendguard and its plugins: a fake clock and deliveries built in one line.

clock = FakeClock(datetime(2026, 11, 22, 9, tzinfo=UTC))
delivery = make_delivery("ann@example.org", not_before=clock.now() + timedelta(hours=1))
verdict = await MyPolicy(MyPolicy.Options()).evaluate(delivery, PolicyContext(store, clock.now()))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import Delivery, DeliveryState, Message, SendguardFields


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> datetime:
        """Move forward by `by`; return the new time."""
        self._now += by
        return self._now

    def set(self, at: datetime) -> None:
        """Jump to `at`."""
        self._now = at


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
    message = Message(
        id=new_id(),
        received_at=when,
        ingress="test",
        mail_from="sender@example.com",
        recipients=(recipient,),
        headers=Headers(tuple((headers or {}).items())),
        fields=fields,
    )
    return Delivery(new_id(), message, recipient, state, when, when)
