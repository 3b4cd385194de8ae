"""`fatigue`: space out, then stop, marketing to people who stopped engaging; honour suppressions.

- A durable suppression (an `unsubscribe`, `complaint` or hard `bounce` event, or one added or
  imported through `/v1/suppressions`) → every delivery of a non-exempt class to that address
  is dropped, however long ago it came: suppressions are never pruned. A `resubscribe` event or
  a reviewer (`DELETE /v1/suppressions/{address}`) lifts it.
- No engagement (any type in `engagement`) since the last `throttle_after` sends → at most one
  send per `throttle_window` (delayed to when the window opens).
- No engagement since the last `sunset_after` sends → dropped (sunset).
- Any engagement event restores normal sending: only sends after the latest engagement count.
  Only the last `lookback` is considered, for sends and engagement alike, so retention keeps
  exactly that much and pruning never changes a decision.
Events come from `POST /v1/events`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator, model_validator

from sendguard.clock import from_micros
from sendguard.duration import Duration
from sendguard.events import EventType
from sendguard.message import Delivery, MessageClass
from sendguard.phrasing import human_duration, human_time
from sendguard.policy import UNREAD, Lookback, PolicyContext, PolicyOptions, class_exempt
from sendguard.recipient import micros
from sendguard.suppressions import Suppression
from sendguard.verdict import Verdict

# Types that say something other than "this person is still interested".
NOT_ENGAGEMENT = frozenset(
    {
        EventType.UNSUBSCRIBE,
        EventType.RESUBSCRIBE,
        EventType.BOUNCE,
        EventType.COMPLAINT,
        EventType.DELIVERED,
    }
)
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class FatigueOptions(PolicyOptions):
    """Options of the fatigue policy."""

    throttle_after: int = Field(default=5, gt=0)
    sunset_after: int = Field(default=10, gt=0)
    throttle_window: Duration = timedelta(days=7)
    lookback: Duration = timedelta(days=365)
    engagement: tuple[str, ...] = Field(
        default=("open", "click", "reply", "purchase"), min_length=1
    )
    exempt_classes: list[MessageClass] = Field(default_factory=lambda: [MessageClass.TRANSACTIONAL])

    @field_validator("engagement")
    @classmethod
    def _types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        for name in types:
            if name in NOT_ENGAGEMENT:
                raise ValueError(f"{name!r} is not an engagement type")
            if not _TYPE_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not an event type name (lower case letters, digits, _ . -)"
                )
        return types

    @model_validator(mode="after")
    def _order(self) -> FatigueOptions:
        if self.sunset_after < self.throttle_after:
            raise ValueError("sunset_after must not be smaller than throttle_after")
        if self.lookback < self.throttle_window:
            raise ValueError("lookback must not be shorter than throttle_window")
        return self


class FatiguePolicy:
    """Throttles and sunsets unengaged recipients; drops suppressed addresses."""

    Options: ClassVar[type[BaseModel]] = FatigueOptions

    def __init__(self, options: FatigueOptions) -> None:
        self._options = options
        self._engagement = frozenset(options.engagement)
        # What `evaluate_now` reads of the options for every delivery, as plain attributes (a
        # pydantic model's go through its __getattr__ hook); the lookback in microseconds too.
        self._exempt = options.exempt_classes
        self._lookback = options.lookback
        self._lookback_us = options.lookback // timedelta(microseconds=1)
        self._sunset_after = options.sunset_after
        self._throttle_after = options.throttle_after
        # A forward depends on the options, the count of unanswered mails (below
        # `sunset_after`) and whether the person ever engaged: made once for each.
        self._forwards: dict[tuple[int, bool], Verdict] = {}

    def lookback(self) -> Lookback:
        """Sends and events of the last `lookback`; custom engagement types are accepted."""
        options = self._options
        custom = self._engagement - {t.value for t in EventType}
        return Lookback(
            history=options.lookback, events=options.lookback, event_types=frozenset(custom)
        )

    def suppressed_classes(self) -> frozenset[MessageClass]:
        """Every class not in `exempt_classes`: `evaluate` forwards exempt mail before it
        looks at the suppression."""
        return frozenset(MessageClass) - frozenset(self._options.exempt_classes)

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """`evaluate` from what the decision read about the recipient (None: not read)."""
        exempt = self._exempt
        if delivery.message.fields.message_class in exempt:
            return class_exempt(delivery)
        recipient = delivery.recipient
        reads = ctx.reads_now(recipient)
        if reads is None:
            return None
        suppressed = reads.suppression
        if suppressed is not None:
            zone = ctx.recipient_zone_now(delivery)
            if zone is UNREAD:
                return None
            return self._suppressed(delivery, suppressed, zone)
        since = ctx.now - self._lookback
        events = ctx.events_now(recipient, since)
        if events is None:
            return None
        engaged = None
        if events:
            engagement = self._engagement
            engaged = max((e.at for e in events if str(e.type) in engagement), default=None)
        # Counted on the sends' microseconds: a datetime only for the newest of a throttle.
        sends = ctx.send_micros_now(
            ctx.now_micros - self._lookback_us if engaged is None else micros(engaged),
            recipient=recipient,
            exclude_classes=exempt,
            limit=self._sunset_after,
        )
        if sends is None:
            return None
        quiet = len(sends)
        newest = from_micros(sends[0]) if quiet >= self._throttle_after else None
        return self._judged(ctx, quiet, newest, engaged is not None and engaged > since)

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        if delivery.message.fields.message_class in options.exempt_classes:
            return class_exempt(delivery)
        suppressed = await ctx.suppression(delivery.recipient)
        if suppressed is not None:
            zone = await ctx.recipient_zone(delivery)
            return self._suppressed(delivery, suppressed, zone)
        since = ctx.now - options.lookback
        events = await ctx.events(delivery.recipient, since)
        engaged = max((e.at for e in events if str(e.type) in self._engagement), default=since)
        sends = await ctx.send_times(
            engaged,
            recipient=delivery.recipient,
            exclude_classes=options.exempt_classes,
            limit=options.sunset_after,
        )
        return self._judged(ctx, len(sends), sends[0] if sends else None, engaged > since)

    @staticmethod
    def _suppressed(delivery: Delivery, suppressed: Suppression, zone: ZoneInfo | None) -> Verdict:
        return Verdict.drop(
            f"{delivery.recipient} is suppressed ({suppressed.reason.value} at"
            f" {human_time(suppressed.created_at, zone)}, from {suppressed.source})"
        )

    def _judged(
        self, ctx: PolicyContext, quiet: int, newest: datetime | None, engaged: bool
    ) -> Verdict:
        """The verdict on the recipient's `quiet` unanswered sends (counted up to
        `sunset_after`), the newest at `newest` (needed from `throttle_after` on); `engaged`:
        they engaged within the lookback."""
        options = self._options
        if quiet >= options.sunset_after:
            return Verdict.drop(f"no engagement over the last {quiet} messages: sunset")
        if quiet >= options.throttle_after:
            assert newest is not None
            opens = newest + options.throttle_window
            if opens > ctx.now:
                return Verdict.delay(
                    opens,
                    (
                        f"throttled: no engagement over the last {quiet} messages; at most one per"
                        f" {human_duration(options.throttle_window)}"
                    ),
                )
        forward = self._forwards.get((quiet, engaged))
        if forward is None:
            forward = Verdict.forward(self._engaged_enough(quiet, engaged))
            self._forwards[quiet, engaged] = forward
        return forward

    def _engaged_enough(self, quiet: int, engaged: bool) -> str:
        """Why a forward: how many mails went unanswered, and when throttling would begin."""
        options = self._options
        if quiet == 0:
            if engaged:
                return "engaged since the last message"
            return f"no marketing mail within the last {human_duration(options.lookback)} yet"
        unanswered = f"{quiet} message{'s' if quiet > 1 else ''} without engagement"
        return f"{unanswered}; throttling starts after {options.throttle_after}"
