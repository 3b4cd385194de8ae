"""`human_hold`: put deliveries in the review queue until a person decides.

Holds (in this order of checks, the first that applies gives the reason):
- a delivery of a campaign a reviewer rejected → dropped;
- `hold_unapproved_campaigns`: a delivery of a campaign nobody approved yet (approving the
  campaign releases what it held and lets the rest flow);
- `sensitive_recipients`: addresses (`ceo@example.com`) or whole domains (`@example.gov`);
- `patterns`: regular expressions matched against the subject and the text of the message;
- `max_blast`: more than this many deliveries of one campaign within `blast_window`.

A delivery a reviewer approved one by one is not held again by this policy; every other policy
still judges it.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections import OrderedDict
from datetime import timedelta
from email.message import EmailMessage
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sendguard.duration import Duration, format_duration
from sendguard.message import Delivery
from sendguard.policy import Lookback, PolicyContext
from sendguard.store.base import Approval
from sendguard.verdict import Verdict

_TEXT_CACHE = 64


class HumanHoldOptions(BaseModel):
    """Options of the human_hold policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hold_unapproved_campaigns: bool = True
    max_blast: int | None = Field(default=1000, gt=0)
    blast_window: Duration = timedelta(hours=1)
    patterns: list[str] = Field(default_factory=list)
    sensitive_recipients: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return patterns


def message_text(content: bytes) -> str:
    """The subject and every text part of a message, for pattern matching."""
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    parts = [str(parsed.get("Subject", ""))]
    for part in parsed.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            try:
                parts.append(part.get_content())
            except (LookupError, UnicodeError, AttributeError):
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    parts.append(payload.decode("utf-8", errors="replace"))
    return "\n".join(parts)


class HumanHoldPolicy:
    """Holds deliveries for review by campaign approval, recipient, content and volume."""

    Options: ClassVar[type[BaseModel]] = HumanHoldOptions

    def __init__(self, options: HumanHoldOptions) -> None:
        self._options = options
        self._patterns = [re.compile(p, re.IGNORECASE) for p in options.patterns]
        self._sensitive = {s.lower() for s in options.sensitive_recipients}
        # One message fans out to many deliveries: parse its text once, not per recipient.
        self._texts: OrderedDict[str, str] = OrderedDict()

    def lookback(self) -> Lookback:
        """Deliveries of a campaign created within `blast_window`."""
        options = self._options
        return Lookback(deliveries=options.blast_window if options.max_blast else timedelta(0))

    async def _text(self, delivery: Delivery, ctx: PolicyContext) -> str:
        message_id = delivery.message.id
        if message_id in self._texts:
            self._texts.move_to_end(message_id)
            return self._texts[message_id]
        text = message_text(await ctx.content(message_id))
        self._texts[message_id] = text
        if len(self._texts) > _TEXT_CACHE:
            self._texts.popitem(last=False)
        return text

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        name = delivery.campaign
        campaign = await ctx.campaign(name) if name is not None else None
        if campaign is not None and campaign.approval is Approval.REJECTED:
            return Verdict.drop(f"campaign {name} was rejected by {campaign.updated_by}")
        if delivery.approved_by is not None:
            return Verdict.forward(f"approved by {delivery.approved_by}")
        approved = campaign is not None and campaign.approval is Approval.APPROVED
        if options.hold_unapproved_campaigns and name is not None and not approved:
            return Verdict.hold(f"campaign {name} is not approved yet")
        recipient = delivery.recipient.lower()
        if recipient in self._sensitive or "@" + recipient.rpartition("@")[2] in self._sensitive:
            return Verdict.hold(f"{delivery.recipient} is a sensitive recipient")
        if self._patterns:
            text = await self._text(delivery, ctx)
            for pattern in self._patterns:
                if pattern.search(text):
                    return Verdict.hold(f"content matches {pattern.pattern!r}")
        if options.max_blast is not None and name is not None and not approved:
            since = ctx.now - options.blast_window
            volume = await ctx.campaign_volume(name, since) + len(delivery.message.recipients)
            if volume > options.max_blast:
                return Verdict.hold(
                    f"campaign {name} has {volume} deliveries within "
                    f"{format_duration(options.blast_window)}, more than max_blast "
                    f"{options.max_blast}"
                )
        return Verdict.forward("no reason to hold")
