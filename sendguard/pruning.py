"""What retention may forget: one cutoff per kind of record (`retention.py` computes them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PruneCutoffs:
    """Per kind of record, what is older than the cutoff may be forgotten; None keeps all.

    Suppressions have no cutoff: they are never pruned.
    """

    deliveries: datetime | None
    """Finished deliveries (updated before it) with their transitions and outcomes; messages
    left without deliveries (received before it)."""
    history: datetime | None
    events: datetime | None
    facts: datetime | None
    idempotency: datetime | None
    events_kept: frozenset[str] = frozenset()
    """Event types kept at any age, whatever `events` says (a policy reads them at any age)."""

    @classmethod
    def uniform(cls, before: datetime) -> PruneCutoffs:
        """The same cutoff for everything."""
        return cls(before, before, before, before, before)
