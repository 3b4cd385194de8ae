"""Aggregates over what the store keeps: the shadow report and the ages of waiting work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ShadowExample:
    """One delivery a shadow policy would have treated otherwise than forward."""

    delivery_id: str
    recipient: str
    campaign: str | None
    verdict: str
    reason: str
    at: datetime
    until: datetime | None = None


@dataclass(frozen=True)
class ShadowTally:
    """What one shadow policy said in a window: verdict counts (forwards included), the
    latest examples of each other verdict, and the recipients it would have affected most."""

    policy: str
    counts: dict[str, int]
    examples: Sequence[ShadowExample]
    recipients: Sequence[tuple[str, int]]


@dataclass(frozen=True)
class QueueAges:
    """How long the oldest work has waited (for alerts): None when there is none."""

    oldest_held_since: datetime | None
    """When the longest-held delivery (held by a policy, not a pause) was held."""
    oldest_due_at: datetime | None
    """The earliest due time among deliveries waiting to be sent or judged again."""
