"""`human_hold`: put deliveries in the review queue until a person decides.

Holds (in this order of checks, the first that applies gives the reason):
- a delivery of a campaign a reviewer rejected → dropped;
- `hold_unapproved_campaigns`: a delivery of a campaign nobody approved yet (approving the
  campaign releases what it held and lets the rest flow). With `bind_approval_to_content` an
  approval covers the content it released, its text and its links (the hosts it links to and
  embeds from): changed copy, or the same copy pointing elsewhere, is held again. Classes in
  `exempt_classes` (transactional) are not held by this rule;
- `review_sample`: of each new content variant of a campaign, the first `first` deliveries are
  held as its sample and the rest wait for it; once the campaign (and so the variant) is
  approved, a random `share` of the variant's later deliveries is still held as spot checks;
- `sensitive_recipients`: addresses (`ceo@example.com`) or whole domains (`@example.gov`);
- `patterns`: regular expressions matched against the subject and the text of the message;
- `max_blast`: more than this many deliveries within `blast_window` of one campaign, or, for
  mail without a campaign, of one content fingerprint (`blast_by`).

A delivery a reviewer approved one by one is not held again by this policy; every other policy
still judges it.
"""

from __future__ import annotations

import email
import email.policy
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sendguard.approvals import Approval, Campaign
from sendguard.content import fingerprints
from sendguard.duration import Duration
from sendguard.links import describe_change, what_changed
from sendguard.message import Delivery, MessageClass
from sendguard.offload import in_process
from sendguard.phrasing import human_duration, human_time
from sendguard.policy import UNREAD, Lookback, PolicyContext, PolicyOptions, class_exempt
from sendguard.verdict import Verdict

_TEXT_CACHE = 64


class ReviewSample(BaseModel):
    """Sampled review of generated content: per new content variant of a campaign."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first: int = Field(default=1, ge=0)
    """The first this many deliveries of a new variant are held as its sample."""
    share: float = Field(default=0.0, ge=0.0, le=1.0)
    """Of an approved variant's later deliveries, this share is still held (spot checks)."""
    seed: int | None = None
    """Seed of the random spot checks (reproducible runs); none: seeded by the system."""


BlastKey = Literal["campaign", "fingerprint"]


def _campaign_then_fingerprint() -> list[BlastKey]:
    return ["campaign", "fingerprint"]


class HumanHoldOptions(PolicyOptions):
    """Options of the human_hold policy."""

    hold_unapproved_campaigns: bool = True
    bind_approval_to_content: bool = True
    exempt_classes: list[MessageClass] = Field(default_factory=lambda: [MessageClass.TRANSACTIONAL])
    review_sample: ReviewSample | None = None
    max_blast: int | None = Field(default=1000, gt=0)
    blast_window: Duration = timedelta(hours=1)
    blast_by: list[BlastKey] = Field(default_factory=_campaign_then_fingerprint, min_length=1)
    """What a blast is counted by: the first of these the message has."""
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

    def __init__(
        self, options: HumanHoldOptions, chance: Callable[[], float] | None = None
    ) -> None:
        self._options = options
        sample = options.review_sample
        # Spot checks need spread, not secrecy: injectable (tests) or seeded from the options.
        self._chance = chance or random.Random(sample.seed if sample else None).random  # noqa: S311
        self._patterns = [re.compile(p, re.IGNORECASE) for p in options.patterns]
        self._sensitive = {s.lower() for s in options.sensitive_recipients}
        # One message fans out to many deliveries: parse its text once, not per recipient.
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._old_links: OrderedDict[str, str] = OrderedDict()
        self._holds: dict[str, Verdict] = {}

    def lookback(self) -> Lookback:
        """Deliveries of a campaign created within `blast_window`."""
        options = self._options
        return Lookback(deliveries=options.blast_window if options.max_blast else timedelta(0))

    async def _text(self, delivery: Delivery, ctx: PolicyContext) -> str:
        message_id = delivery.message.id
        if message_id in self._texts:
            self._texts.move_to_end(message_id)
            return self._texts[message_id]
        content = await ctx.content(message_id)
        text = await in_process(len(content), message_text, content)
        self._texts[message_id] = text
        if len(self._texts) > _TEXT_CACHE:
            self._texts.popitem(last=False)
        return text

    async def _links(self, delivery: Delivery, ctx: PolicyContext) -> str:
        """The message's link targets; read from its content for a message stored before
        they were recorded (schema 14)."""
        message = delivery.message
        if message.links is not None:
            return message.links
        found = self._old_links.get(message.id)
        if found is None:
            content = await ctx.content(message.id)
            found = (await in_process(len(content), fingerprints, content)).links
            self._old_links[message.id] = found
            if len(self._old_links) > _TEXT_CACHE:
                self._old_links.popitem(last=False)
        return found

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """`evaluate` when the campaign (read by the engine before the policies) settles it: a
        rejected campaign, a delivery approved one by one, or an unapproved campaign's hold
        without a sample; None for the rest (approvals, samples, content, counts to read)."""
        options = self._options
        name = delivery.campaign
        if name is None:
            return None
        campaign = ctx.campaign_now(name)
        if campaign is UNREAD:
            return None
        if campaign is not None and campaign.approval is Approval.REJECTED:
            return Verdict.drop(f"campaign {name} was rejected by {campaign.updated_by}")
        if delivery.approved_by is not None:
            return Verdict.forward(f"approved by {delivery.approved_by}")
        if (
            options.hold_unapproved_campaigns
            and options.review_sample is None
            and delivery.message.fields.message_class not in options.exempt_classes
            and not (campaign is not None and campaign.approval is Approval.APPROVED)
        ):
            return self._unapproved(name)
        return None

    def _unapproved(self, name: str) -> Verdict:
        """The hold of a delivery of campaign `name`, which nobody approved yet (made once per
        campaign: every delivery of it until the approval gets the same)."""
        held = self._holds.get(name)
        if held is None:
            held = Verdict.hold(f"campaign {name} is not approved yet")
            if len(self._holds) >= _TEXT_CACHE:
                self._holds.clear()
            self._holds[name] = held
        return held

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        name = delivery.campaign
        campaign = await ctx.campaign(name) if name is not None else None
        if campaign is not None and campaign.approval is Approval.REJECTED:
            return Verdict.drop(f"campaign {name} was rejected by {campaign.updated_by}")
        if delivery.approved_by is not None:
            return Verdict.forward(f"approved by {delivery.approved_by}")
        approved = campaign is not None and campaign.approval is Approval.APPROVED
        if name is not None:
            held = await self._campaign_rule(delivery, ctx, name, campaign)
            if held is not None:
                return held
        recipient = delivery.recipient.lower()
        if recipient in self._sensitive or "@" + recipient.rpartition("@")[2] in self._sensitive:
            return Verdict.hold(f"{delivery.recipient} is a sensitive recipient")
        if self._patterns:
            text = await self._text(delivery, ctx)
            for pattern in self._patterns:
                if pattern.search(text):
                    return Verdict.hold(f"content matches {pattern.pattern!r}")
        if options.max_blast is not None and not approved:
            blast = await self._blast(delivery, ctx)
            if blast is not None:
                return blast
        if approved:
            assert campaign is not None
            return Verdict.forward(f"campaign {name} approved by {campaign.updated_by}")
        if name is None or not options.hold_unapproved_campaigns:
            return Verdict.forward("no review rule applies")
        return class_exempt(delivery)

    async def _campaign_rule(
        self, delivery: Delivery, ctx: PolicyContext, name: str, campaign: Campaign | None
    ) -> Verdict | None:
        """Is this campaign's content approved? None if nothing holds it."""
        options = self._options
        sample = options.review_sample
        if not options.hold_unapproved_campaigns and sample is None:
            return None
        if delivery.message.fields.message_class in options.exempt_classes:
            return None
        approved = campaign is not None and campaign.approval is Approval.APPROVED
        content = delivery.message.content_hash
        bound = (options.bind_approval_to_content or sample is not None) and content is not None
        if approved and not bound:
            return None
        approvals = await ctx.approvals(name) if approved else ()
        same_text = [a for a in approvals if a.content_hash == content] if approved else []
        if same_text:
            assert content is not None
            # Approvals from before links were recorded cover their text whatever the links.
            bound_to_links = any(a.links is not None for a in same_text)
            links = await self._links(delivery, ctx) if bound_to_links else None
            if not any(a.covers(content, links) for a in same_text):
                newest = same_text[0]
                assert newest.links is not None and links is not None
                return Verdict.hold(
                    f"campaign {name}: {what_changed(newest.links, links)} changed since"
                    f" {newest.approved_by} approved this"
                    f" content on {_moment(newest.approved_at)}:"
                    f" {describe_change(newest.links, links)}"
                )
            if sample is not None and sample.share > 0 and self._chance() < sample.share:
                return Verdict.hold(
                    f"spot check of campaign {name} (review_sample share {sample.share:g})"
                )
            return None
        if sample is not None and content is not None:
            position = await ctx.content_volume(
                content,
                campaign=name,
                before=delivery.id,
                exclude_message=delivery.message.id,
            ) + delivery.message.recipients.index(delivery.recipient)
            if position < sample.first:
                return Verdict.hold(
                    f"sample {position + 1} of {sample.first} of new content in campaign {name};"
                    " approve the campaign to let this content flow"
                )
            return Verdict.hold(f"new content in campaign {name} waits for its sample's review")
        if not approved:
            return self._unapproved(name)
        assert campaign is not None
        latest = approvals[0] if approvals else None
        who = latest.approved_by if latest else campaign.updated_by
        at = latest.approved_at if latest else campaign.updated_at
        return Verdict.hold(
            f"campaign {name}: content changed since {who} approved it on {_moment(at)}"
        )

    async def _blast(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """More than max_blast deliveries of this campaign (or content) within blast_window?"""
        options = self._options
        assert options.max_blast is not None
        since = ctx.now - options.blast_window
        message = delivery.message
        # Only "more than max_blast?" matters: count no further than that, so a blast of 100,000
        # costs each delivery at most max_blast rows rather than every earlier one.
        enough = options.max_blast - len(message.recipients) + 1
        for key in options.blast_by:
            if key == "campaign" and delivery.campaign is not None:
                what = f"campaign {delivery.campaign}"
                volume = await ctx.campaign_volume(delivery.campaign, since, at_most=enough)
            elif key == "fingerprint" and message.content_hash:
                what = f"the same content (subject {message.subject or '(none)'!r})"
                volume = await ctx.content_volume(message.content_hash, since=since, at_most=enough)
            else:
                continue
            volume += len(message.recipients)
            if volume > options.max_blast:
                return Verdict.hold(
                    f"{what} has more than {options.max_blast} deliveries within "
                    f"{human_duration(options.blast_window)} (max_blast {options.max_blast})"
                )
            return None
        return None


def _moment(at: datetime | None) -> str:
    return human_time(at) if at is not None else "an unknown date"
