"""`repetition`: the same offer to the same person, again and again → drop.

Counts the recipient's sends within `window` of the same campaign, and of the same content
fingerprint (subject and text with greetings, tracking parameters and spacing normalised away,
so personalisation does not hide a repeat). With `limit` or more already, the delivery is dropped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from sendguard.duration import Duration, format_duration
from sendguard.message import Delivery, MessageClass
from sendguard.policy import Lookback, PolicyContext
from sendguard.verdict import Verdict


class RepetitionOptions(BaseModel):
    """Options of the repetition policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=2, gt=0)
    window: Duration = timedelta(days=30)
    match: tuple[Literal["campaign", "content"], ...] = Field(
        default=("campaign", "content"), min_length=1
    )
    exempt_classes: list[MessageClass] = Field(default_factory=lambda: [MessageClass.TRANSACTIONAL])


class RepetitionPolicy:
    """Drops a delivery when the person already had this campaign or content `limit` times."""

    Options: ClassVar[type[BaseModel]] = RepetitionOptions

    def __init__(self, options: RepetitionOptions) -> None:
        self._options = options

    def lookback(self) -> Lookback:
        """Sends within `window`."""
        return Lookback(history=self._options.window)

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        message = delivery.message
        if message.fields.message_class in options.exempt_classes:
            return Verdict.forward(f"{message.fields.message_class.value} mail is exempt")
        history = await ctx.history(delivery.recipient, ctx.now - options.window)
        window = format_duration(options.window)
        if "campaign" in options.match and delivery.campaign is not None:
            same = sum(1 for h in history if h.campaign == delivery.campaign)
            if same >= options.limit:
                return Verdict.drop(
                    f"already sent campaign {delivery.campaign} {same} times within {window}"
                    f" (limit {options.limit})"
                )
        if "content" in options.match and message.content_hash is not None:
            same = sum(1 for h in history if h.content_hash == message.content_hash)
            if same >= options.limit:
                return Verdict.drop(
                    f"already sent this content {same} times within {window}"
                    f" (limit {options.limit})"
                )
        return Verdict.forward("not a repeat")
