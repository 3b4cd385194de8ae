"""`schedule`: hold a message back until `X-Sendguard-Not-Before`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from sendguard.message import Delivery
from sendguard.phrasing import human_time
from sendguard.policy import UNREAD, PolicyContext, PolicyOptions
from sendguard.verdict import Verdict

_NO_NOT_BEFORE = Verdict.forward("no Not-Before")
"""Verdicts are immutable: the common one is made once, not per delivery."""


class ScheduleOptions(PolicyOptions):
    """The schedule policy has no options yet."""


class SchedulePolicy:
    """Delay a delivery until its message's Not-Before time; forward it from then on."""

    Options: ClassVar[type[BaseModel]] = ScheduleOptions

    def __init__(self, options: ScheduleOptions) -> None:
        self._options = options

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """`evaluate`, without awaiting (None: the recipient's zone is not read yet)."""
        not_before = delivery.message.fields.not_before
        if not_before is None:
            return _NO_NOT_BEFORE
        if not_before > ctx.now:
            zone = ctx.recipient_zone_now(delivery)
            if zone is UNREAD:
                return None
            return Verdict.delay(not_before, f"not before {human_time(not_before, zone)}")
        return Verdict.forward(f"Not-Before {human_time(not_before)} has passed")

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        verdict = self.evaluate_now(delivery, ctx)
        if verdict is not None:
            return verdict
        not_before = delivery.message.fields.not_before
        assert not_before is not None  # only the zone can be missing
        zone = await ctx.recipient_zone(delivery)
        return Verdict.delay(not_before, f"not before {human_time(not_before, zone)}")
