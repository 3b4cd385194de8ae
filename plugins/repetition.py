"""`repetition`: the same offer to the same person, again and again → drop.

Counts the recipient's sends within `window` by what `match` names:
- `offer`: the same offer (`X-Sendguard-Offer`, JSON `offer`);
- `content`: the same content fingerprint (subject and text with greetings, tracking parameters
  and spacing normalised away, so personalisation does not hide a repeat);
- `campaign`: the same campaign (opt-in: a campaign is usually a series, such as a newsletter,
  whose issues differ and should all arrive).
With `limit` or more already, the delivery is dropped. A `purchase` event for the recipient
naming the message's offer ends that offer at once: later deliveries of it are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from sendguard.duration import Duration
from sendguard.events import EventType
from sendguard.message import Delivery, MessageClass
from sendguard.phrasing import human_duration, human_time
from sendguard.policy import Lookback, PolicyContext, PolicyOptions, class_exempt
from sendguard.recipient import SEND_CAMPAIGN, SEND_CONTENT, SEND_OFFER, SendRow, send_row
from sendguard.verdict import Verdict

MatchKey = Literal["offer", "content", "campaign"]
_NOT_A_REPEAT = Verdict.forward("not a repeat")
"""Verdicts are immutable: the common one is made once, not per delivery."""


class RepetitionOptions(PolicyOptions):
    """Options of the repetition policy."""

    limit: int = Field(default=2, gt=0)
    window: Duration = timedelta(days=30)
    match: tuple[MatchKey, ...] = Field(default=("offer", "content"), min_length=1)
    exempt_classes: list[MessageClass] = Field(default_factory=lambda: [MessageClass.TRANSACTIONAL])


class RepetitionPolicy:
    """Drops a delivery when the person already had this offer or content `limit` times, or
    bought the offer."""

    Options: ClassVar[type[BaseModel]] = RepetitionOptions

    def __init__(self, options: RepetitionOptions) -> None:
        self._options = options
        self._window = options.window // timedelta(microseconds=1)

    def lookback(self) -> Lookback:
        """Sends within `window`; purchases at any age (a purchase ends its offer for good, so
        retention must not forget one)."""
        return Lookback(
            history=self._options.window,
            events_at_any_age=frozenset({EventType.PURCHASE.value}),
        )

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """`evaluate` from the decision's shared read of the sends, for a message naming no
        offer (None: an offer's purchases, or sends not read)."""
        options = self._options
        message = delivery.message
        if message.fields.message_class in options.exempt_classes:
            return class_exempt(delivery)
        if message.fields.offer is not None:
            return None
        # Counted on the sends' rows: no HistoryEntry, no datetime.
        sends = ctx.sends_now(delivery.recipient, ctx.now_micros - self._window)
        if sends is None:
            return None
        return self._judged(delivery, sends)

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        message = delivery.message
        if message.fields.message_class in options.exempt_classes:
            return class_exempt(delivery)
        offer = message.fields.offer
        if offer is not None:
            for event in await ctx.events(delivery.recipient):
                if event.type is EventType.PURCHASE and _offer_key(event.offer) == _offer_key(
                    offer
                ):
                    zone = await ctx.recipient_zone(delivery)
                    return Verdict.drop(f"bought {offer} on {human_time(event.at, zone)}")
        history = await ctx.history(delivery.recipient, ctx.now - options.window)
        return self._judged(delivery, [send_row(h) for h in history])

    def _judged(self, delivery: Delivery, sends: Sequence[SendRow]) -> Verdict:
        """Drop if the recipient had this offer, content or campaign `limit` times in `sends`."""
        options = self._options
        for key in options.match:
            repeat = self._repeat(key, delivery, sends)
            if repeat is not None:
                return Verdict.drop(
                    f"already sent {repeat[0]} {repeat[1]} times within "
                    f"{human_duration(options.window)} (limit {options.limit})"
                )
        return _NOT_A_REPEAT

    def _repeat(
        self, key: MatchKey, delivery: Delivery, sends: Sequence[SendRow]
    ) -> tuple[str, int] | None:
        """(what, how often) if the recipient had this offer, content or campaign `limit` times."""
        if key == "offer":
            mine = _offer_key(delivery.message.fields.offer)
            count = (
                0 if mine is None else sum(1 for s in sends if _offer_key(s[SEND_OFFER]) == mine)
            )
        elif key == "content":
            mine = delivery.message.content_hash
            count = 0 if mine is None else [s[SEND_CONTENT] for s in sends].count(mine)
        else:
            mine = delivery.campaign
            count = 0 if mine is None else [s[SEND_CAMPAIGN] for s in sends].count(mine)
        if mine is None or count < self._options.limit:
            return None
        return ("this content" if key == "content" else f"{key} {mine}"), count


def _offer_key(offer: str | None) -> str | None:
    """Offers are compared as people write them: `Spring-Sale` is `spring-sale`."""
    return " ".join(offer.split()).casefold() if offer else None
