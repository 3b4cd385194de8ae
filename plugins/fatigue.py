"""`fatigue`: space out, then stop, marketing to people who stopped engaging; honour suppressions.

- `unsubscribe`, `bounce` and `complaint` events → every later delivery of a non-exempt class
  to that address is dropped.
- No open, click or reply since the last `throttle_after` sends → at most one send per
  `throttle_window` (delayed to when the window opens).
- No engagement since the last `sunset_after` sends → dropped (sunset).
- Any engagement event restores normal sending: only sends after the latest engagement count.
Events come from `POST /v1/events`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel, Field, model_validator

from sendguard.duration import Duration, format_duration
from sendguard.message import Delivery, MessageClass
from sendguard.policy import PolicyContext, PolicyOptions
from sendguard.store.base import EventType
from sendguard.verdict import Verdict

ENGAGEMENT = frozenset({EventType.OPEN, EventType.CLICK, EventType.REPLY})
SUPPRESSION = frozenset({EventType.UNSUBSCRIBE, EventType.BOUNCE, EventType.COMPLAINT})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FatigueOptions(PolicyOptions):
    """Options of the fatigue policy."""

    throttle_after: int = Field(default=5, gt=0)
    sunset_after: int = Field(default=10, gt=0)
    throttle_window: Duration = timedelta(days=7)
    exempt_classes: list[MessageClass] = Field(default_factory=lambda: [MessageClass.TRANSACTIONAL])

    @model_validator(mode="after")
    def _order(self) -> FatigueOptions:
        if self.sunset_after < self.throttle_after:
            raise ValueError("sunset_after must not be smaller than throttle_after")
        return self


class FatiguePolicy:
    """Throttles and sunsets unengaged recipients; drops suppressed addresses."""

    Options: ClassVar[type[BaseModel]] = FatigueOptions

    def __init__(self, options: FatigueOptions) -> None:
        self._options = options

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        if delivery.message.fields.message_class in options.exempt_classes:
            return Verdict.forward(f"{delivery.message.fields.message_class.value} mail is exempt")
        events = await ctx.events(delivery.recipient)
        for event in reversed(events):
            if event.type in SUPPRESSION:
                return Verdict.drop(
                    f"{delivery.recipient} reported {event.type.value} at {event.at.isoformat()}"
                )
        engaged = max((e.at for e in events if e.type in ENGAGEMENT), default=_EPOCH)
        sends = await ctx.send_times(
            engaged,
            recipient=delivery.recipient,
            exclude_classes=options.exempt_classes,
            limit=options.sunset_after,
        )
        quiet = len(sends)
        if quiet >= options.sunset_after:
            return Verdict.drop(f"no open, click or reply over the last {quiet} messages: sunset")
        if quiet >= options.throttle_after:
            opens = sends[0] + options.throttle_window
            if opens > ctx.now:
                return Verdict.delay(
                    opens,
                    (
                        f"throttled: no engagement over the last {quiet} messages; at most one per"
                        f" {format_duration(options.throttle_window)}"
                    ),
                )
        return Verdict.forward("engaged recently enough")
