"""Retention: how long each kind of record is kept, derived from what the policies read.

`store.retention` is the floor: finished deliveries (the timeline), send history, events,
facts and idempotency keys older than it may go. A configured policy that reads further back
raises its kind's horizon to what it reads (`Policy.lookback()`), and one that reads a kind at
any age keeps that kind for ever, so pruning never changes a decision. Suppressions are not
pruned at all (the store never deletes them but through a lift).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sendguard.duration import format_duration
from sendguard.events import EventType
from sendguard.policy import ReadsStore
from sendguard.pruning import PruneCutoffs


def _longest(floor: timedelta, needs: Iterable[timedelta | None]) -> timedelta | None:
    longest = floor
    for need in needs:
        if need is None:
            return None
        longest = max(longest, need)
    return longest


@dataclass(frozen=True)
class Horizons:
    """How far back each kind of record is kept; None: for ever."""

    deliveries: timedelta | None
    history: timedelta | None
    events: timedelta | None
    facts: timedelta | None
    idempotency: timedelta
    events_kept: frozenset[str] = frozenset()
    """Event types kept for ever whatever `events` says: some policy reads them at any age."""

    @classmethod
    def of(
        cls,
        retention: timedelta,
        policies: Iterable[object],
        *,
        resend_window: timedelta = timedelta(0),
    ) -> Horizons:
        """`retention` raised to what every policy in `policies` says it reads, and deliveries
        kept at least `resend_window` (`smtp.resend_window`: the resend check looks for a
        recipient's deliveries of an earlier copy that far back)."""
        reads = [p.lookback() for p in policies if isinstance(p, ReadsStore)]
        return cls(
            deliveries=_longest(max(retention, resend_window), (r.deliveries for r in reads)),
            history=_longest(retention, (r.history for r in reads)),
            events=_longest(retention, (r.events for r in reads)),
            facts=_longest(retention, (r.facts for r in reads)),
            idempotency=retention,
            events_kept=frozenset().union(*(r.events_at_any_age for r in reads)),
        )

    def cutoffs(self, now: datetime) -> PruneCutoffs:
        """What may be pruned at `now`."""

        def before(horizon: timedelta | None) -> datetime | None:
            return None if horizon is None else now - horizon

        return PruneCutoffs(
            deliveries=before(self.deliveries),
            history=before(self.history),
            events=before(self.events),
            facts=before(self.facts),
            idempotency=now - self.idempotency,
            events_kept=self.events_kept,
        )

    def describe(self) -> dict[str, str]:
        """Each kind's horizon for the log (`forever` when never pruned)."""
        described = {
            name: "forever" if value is None else format_duration(value)
            for name, value in (
                ("deliveries", self.deliveries),
                ("history", self.history),
                ("events", self.events),
                ("facts", self.facts),
                ("idempotency", self.idempotency),
            )
        }
        if self.events_kept and self.events is not None:
            described["events"] += f" ({', '.join(sorted(self.events_kept))}: forever)"
        return described


def accepted_event_types(policies: Iterable[object]) -> frozenset[str]:
    """The event types `POST /v1/events` accepts: the built-in ones and every custom type a
    configured policy reads."""
    custom: set[str] = set()
    for policy in policies:
        if isinstance(policy, ReadsStore):
            custom |= policy.lookback().event_types
    return frozenset(t.value for t in EventType) | custom
