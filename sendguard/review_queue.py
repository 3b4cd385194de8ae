"""The review queue: held deliveries by campaign, reviewers' edits before approval, and the
notices that tell reviewers something is held."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sendguard.approvals import Campaign
from sendguard.message import Delivery


@dataclass(frozen=True)
class HeldQuery:
    """Filters and the page of the review queue (held deliveries, by campaign)."""

    campaign: str | None = None
    recipient: str | None = None
    policy: str | None = None
    """Only deliveries this policy holds in its latest decision (`pause`: held by a pause)."""
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True)
class HeldGroup:
    """The held deliveries of one campaign (`None`: of no campaign) matching a query."""

    campaign: str | None
    count: int
    oldest: datetime
    """When the longest-waiting of them last changed (was held)."""
    expires: datetime | None
    """When the first of them reaches its hold expiry, if any does."""


@dataclass(frozen=True)
class HeldQueue:
    """The review queue: every matching group, and one page of the matching deliveries in
    queue order (campaigns by name, no campaign last; newest first within a campaign)."""

    groups: Sequence[HeldGroup]
    deliveries: Sequence[Delivery]
    total: int
    reviewed: Sequence[Campaign] = ()
    """Every campaign reviewers decided something about (approved, rejected, paused)."""


class EditedPart(StrEnum):
    """What a reviewer may correct before approving."""

    SUBJECT = "subject"
    TEXT = "text"
    HTML = "html"


@dataclass(frozen=True)
class Edit:
    """A reviewer's correction of a held campaign message: the edited copy is a message of its
    own (`edited_message_id`), the message it corrects stays as it was."""

    id: str
    campaign: str
    message_id: str
    """The message that was corrected (itself an edited copy when edited twice)."""
    edited_message_id: str
    origin_message_id: str
    """The message as it was received: the first of a chain of edits."""
    actor: str
    at: datetime
    changed: tuple[EditedPart, ...]
    diff: str
    """A unified diff of what changed (subject, text part, HTML part)."""
    note: str = ""
    count: int = 0
    """How many held deliveries moved to the edited copy."""


@dataclass(frozen=True)
class ReviewNotice:
    """A campaign (`None`: mail of no campaign) that has held deliveries, since when, and
    whether the reviewers were told."""

    campaign: str | None
    held_at: datetime
    sent_at: datetime | None = None
