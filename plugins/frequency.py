"""`frequency`: caps per recipient, per recipient and campaign, per recipient domain; quiet hours.

Caps count what was decided (a send is reserved when a delivery is forwarded, in the same
transaction as the decision), so fifty messages arriving at once for one person cannot all
slip through. Over a cap, the delivery is delayed to the exact moment the window opens again
(when the oldest counted send leaves it), or dropped if that is further away than
`max_delay`. Quiet hours, when configured, move a send to their end in the recipient's time
zone (`X-Sendguard-Timezone`, else a `timezone` fact for the recipient, else
`default_timezone`), across midnight and DST.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sendguard.address import domain_of
from sendguard.clock import from_micros
from sendguard.duration import Duration
from sendguard.message import Delivery, MessageClass
from sendguard.phrasing import human_duration, human_time
from sendguard.policy import UNREAD, Lookback, PolicyContext, PolicyOptions, class_exempt
from sendguard.verdict import Verdict

_MICROSECOND = timedelta(microseconds=1)


class Cap(BaseModel):
    """At most `limit` sends in any `window`, counted per `scope`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["recipient", "campaign", "domain"] = "recipient"
    limit: int = Field(gt=0, le=10_000)
    window: Duration

    @field_validator("window")
    @classmethod
    def _positive(cls, window: timedelta) -> timedelta:
        if window <= timedelta(0):
            raise ValueError("window must be longer than 0s")
        return window


class QuietHours(BaseModel):
    """No sends from `start` to `end` local time (crossing midnight when start > end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time
    end: time
    default_timezone: str = "UTC"

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone (like Europe/Berlin)") from None
        return name

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class FrequencyOptions(PolicyOptions):
    """Options of the frequency policy."""

    caps: list[Cap] = Field(
        default_factory=lambda: [
            Cap(scope="recipient", limit=1, window=timedelta(days=1)),
            Cap(scope="recipient", limit=3, window=timedelta(days=7)),
        ]
    )
    exempt_classes: list[MessageClass] = Field(default_factory=lambda: [MessageClass.TRANSACTIONAL])
    quiet_hours: QuietHours | None = None
    max_delay: Duration = timedelta(days=7)


def in_quiet_hours(local: time, quiet: QuietHours) -> bool:
    """True if the local wall-clock time falls in the quiet period."""
    if quiet.start < quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end


def quiet_end(at: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """The first moment at or after `at` outside the quiet hours of `zone`."""
    local = at.astimezone(zone)
    if not in_quiet_hours(local.timetz().replace(tzinfo=None), quiet):
        return at
    day = local.date()
    if local.time() >= quiet.end:  # evening part of a period that crosses midnight
        day += timedelta(days=1)
    end = datetime.combine(day, quiet.end, tzinfo=zone)
    # A wall time that does not exist (DST gap) is normalised by the round trip through UTC.
    return end.astimezone(at.tzinfo)


class FrequencyPolicy:
    """Delays or drops deliveries that would exceed a cap or land in quiet hours."""

    Options: ClassVar[type[BaseModel]] = FrequencyOptions

    def __init__(self, options: FrequencyOptions) -> None:
        self._options = options
        quiet = options.quiet_hours
        self._default_zone = ZoneInfo(quiet.default_timezone) if quiet else None
        # A forward depends on the options and the zone only: made once per zone.
        self._rooms: dict[ZoneInfo | None, Verdict] = {}
        # What `evaluate_now` reads of the options for every delivery, as plain attributes (a
        # pydantic model's go through its __getattr__ hook): each cap with its scope, limit
        # and window in microseconds (counted on the sends' rows).
        self._caps = tuple(
            (cap, cap.scope, cap.limit, cap.window // _MICROSECOND) for cap in options.caps
        )
        self._exempt = options.exempt_classes
        self._quiet = quiet

    def lookback(self) -> Lookback:
        """Sends within the longest cap window; a `timezone` fact (quiet hours) at any age."""
        options = self._options
        longest = max((cap.window for cap in options.caps), default=timedelta(0))
        return Lookback(history=longest, facts=None if options.quiet_hours else timedelta(0))

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """`evaluate` from the decision's shared read of the sends (None: a domain cap, or
        sends or the zone not read)."""
        exempt = self._exempt
        if delivery.message.fields.message_class in exempt:
            return class_exempt(delivery)
        earliest, full = ctx.now, None
        now, recipient, campaign = ctx.now_micros, delivery.recipient, delivery.campaign
        for cap, scope, limit, window in self._caps:
            # Counted on the sends' microseconds: a datetime only for the oldest of a full cap.
            if scope == "recipient":
                times = ctx.send_micros_now(
                    now - window, recipient=recipient, exclude_classes=exempt, limit=limit
                )
            elif scope == "domain":
                return None
            elif campaign is None:
                continue
            else:
                times = ctx.send_micros_now(
                    now - window,
                    recipient=recipient,
                    campaign=campaign,
                    exclude_classes=exempt,
                    limit=limit,
                )
            if times is None:
                return None
            if len(times) >= limit:
                opens = from_micros(times[-1]) + cap.window  # see _window_opens
                if opens > earliest:
                    earliest, full = opens, cap
        zone = None
        if full is not None or self._quiet is not None:
            found = ctx.recipient_zone_now(delivery)
            if found is UNREAD:
                return None
            zone = found
        return self._judged(ctx, earliest, full, zone)

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        fields = delivery.message.fields
        if fields.message_class in options.exempt_classes:
            return class_exempt(delivery)
        earliest, full = ctx.now, None
        for cap in options.caps:
            opens = await self._window_opens(cap, delivery, ctx)
            if opens is not None and opens > earliest:
                earliest, full = opens, cap
        # The recipient's zone (a fact read) matters only for quiet hours and for saying
        # when a full window opens: most deliveries need neither.
        zone = None
        if full is not None or options.quiet_hours is not None:
            zone = await ctx.recipient_zone(delivery)
        return self._judged(ctx, earliest, full, zone)

    def _judged(
        self, ctx: PolicyContext, earliest: datetime, full: Cap | None, zone: ZoneInfo | None
    ) -> Verdict:
        """The verdict once the caps are counted: `earliest` the time every cap allows a send
        (`full` the cap that sets it, if any), `zone` the recipient's (if needed and known)."""
        options = self._options
        if zone is None:
            zone = self._default_zone
        why = ""
        if full is not None:
            why = (
                f"{full.scope} cap {full.limit} per {human_duration(full.window)} reached;"
                f" the window opens at {human_time(earliest, zone)}"
            )
        if options.quiet_hours is not None:
            assert zone is not None
            after = quiet_end(earliest, zone, options.quiet_hours)
            if after > earliest:
                earliest = after
                why = (
                    f"quiet hours {options.quiet_hours.start:%H:%M}-"
                    f"{options.quiet_hours.end:%H:%M} in {zone.key}; send at "
                    f"{human_time(after, zone)}"
                )
        if earliest <= ctx.now:
            room = self._rooms.get(zone)
            if room is None:
                room = self._rooms[zone] = Verdict.forward(self._room(options, zone))
            return room
        if earliest - ctx.now > options.max_delay:
            return Verdict.drop(
                f"{why}; that is past max_delay {human_duration(options.max_delay)}"
            )
        return Verdict.delay(earliest, why)

    @staticmethod
    def _room(options: FrequencyOptions, zone: ZoneInfo | None) -> str:
        caps = ", ".join(
            f"{c.limit} per {human_duration(c.window)}"
            + ("" if c.scope == "recipient" else f" per {c.scope}")
            for c in options.caps
        )
        quiet = options.quiet_hours
        hours = ""
        if quiet is not None and zone is not None:
            hours = f"; outside quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} {zone.key}"
        return f"within every cap ({caps}){hours}" if caps else f"no caps configured{hours}"

    async def _window_opens(
        self, cap: Cap, delivery: Delivery, ctx: PolicyContext
    ) -> datetime | None:
        """When the cap allows one more send, if it is full now."""
        if cap.scope == "campaign" and delivery.campaign is None:
            return None
        times = await ctx.send_times(
            ctx.now - cap.window,
            recipient=delivery.recipient if cap.scope != "domain" else None,
            domain=domain_of(delivery.recipient) if cap.scope == "domain" else None,
            campaign=delivery.campaign if cap.scope == "campaign" else None,
            exclude_classes=self._options.exempt_classes,
            limit=cap.limit,
        )
        if len(times) < cap.limit:
            return None
        return times[-1] + cap.window  # the oldest counted send leaves the window then
