"""Reviewers' decisions: about a whole campaign, about its content, and the global pause."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sendguard.message import DeliveryState


class Approval(StrEnum):
    """A reviewer's word on a whole campaign."""

    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Campaign:
    """What reviewers decided about a campaign."""

    name: str
    approval: Approval | None = None
    paused: bool = False
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(frozen=True)
class ContentApproval:
    """A reviewer approved this content (fingerprint) of a campaign: it may flow unreviewed.

    It covers a message with the same `content_hash` whose link targets are `links` (both
    fingerprints as sendguard.content.Fingerprint has them). An approval recorded before
    schema 14 has `links` None: it covers its text whatever the links (grandfathered)."""

    campaign: str
    content_hash: str
    approved_by: str
    approved_at: datetime
    links: str | None = None

    def covers(self, content_hash: str, links: str | None) -> bool:
        """Does this approval cover a message with these fingerprints?"""
        return self.content_hash == content_hash and (self.links is None or self.links == links)


@dataclass(frozen=True)
class GlobalPause:
    """The global kill switch: while `paused`, every unsent delivery is held."""

    paused: bool = False
    updated_at: datetime | None = None
    updated_by: str | None = None
    note: str = ""


@dataclass(frozen=True)
class CampaignSummary:
    """A campaign's review state with how many of its deliveries are in each state."""

    campaign: Campaign
    counts: dict[DeliveryState, int]
