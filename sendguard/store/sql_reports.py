"""Aggregates (`Aggregates`): counts by state, campaigns with their tallies, the shadow
report and the queue's ages, for `/metrics`, `/v1/campaigns` and `shadow-report`. Scans only,
never on the event loop's thread; no writes. Campaign rows read as review keeps them
(`SqlReview._campaign`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sendguard.approvals import Campaign, CampaignSummary
from sendguard.clock import from_micros, to_micros
from sendguard.message import DeliveryState
from sendguard.reports import QueueAges, ShadowExample, ShadowTally
from sendguard.store import codec
from sendguard.store.sql_jobs import Tx, _one
from sendguard.store.sql_review import SqlReview


class SqlReports(SqlReview):
    """Counts and reports over the whole store."""

    async def count_by_state(self) -> dict[DeliveryState, int]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch("SELECT state, COUNT(*) FROM deliveries GROUP BY state")

        counts = dict.fromkeys(DeliveryState, 0)
        counts.update({DeliveryState(state): n for state, n in await self._scan(job)})
        return counts

    async def campaigns(self) -> Sequence[CampaignSummary]:
        async def job(tx: Tx) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
            counts = await tx.fetch(
                "SELECT campaign, state, COUNT(*) FROM deliveries WHERE campaign IS NOT NULL"
                " GROUP BY campaign, state"
            )
            reviewed = await tx.fetch(
                "SELECT name, approval, paused, updated_at, updated_by FROM campaigns"
            )
            return counts, reviewed

        counts, reviewed = await self._scan(job)
        by_name = {r[0]: self._campaign(r) for r in reviewed}
        tallies: dict[str, dict[DeliveryState, int]] = {}
        for name, state, n in counts:
            tallies.setdefault(name, dict.fromkeys(DeliveryState, 0))[DeliveryState(state)] = n
        return [
            CampaignSummary(
                by_name.get(name, Campaign(name)),
                tallies.get(name, dict.fromkeys(DeliveryState, 0)),
            )
            for name in sorted(set(by_name) | set(tallies))
        ]

    async def shadow_tallies(
        self, since: datetime, *, examples: int = 5, top: int = 10
    ) -> Sequence[ShadowTally]:
        start = to_micros(since)
        window = "o.mode = 'shadow' AND o.at >= ?"

        async def job(tx: Tx) -> tuple[list[Sequence[Any]], ...]:
            counts = await tx.fetch(
                f"SELECT o.policy, o.action, COUNT(*) FROM outcomes o WHERE {window}"
                " GROUP BY o.policy, o.action",
                (start,),
            )
            samples = await tx.fetch(
                "SELECT policy, action, delivery_id, recipient, campaign, reason, at, until"
                " FROM (SELECT o.policy, o.action, o.delivery_id, d.recipient, d.campaign,"
                " o.reason, o.at, o.until, ROW_NUMBER() OVER (PARTITION BY o.policy, o.action"
                " ORDER BY o.at DESC, o.delivery_id DESC) AS n"
                f" FROM outcomes o JOIN deliveries d ON d.id = o.delivery_id WHERE {window}"
                " AND o.action <> 'forward') AS ranked WHERE n <= ?"
                " ORDER BY policy, action, at DESC, delivery_id DESC",
                (start, examples),
            )
            people = await tx.fetch(
                "SELECT policy, recipient_key, hits FROM (SELECT policy, recipient_key, hits,"
                " ROW_NUMBER() OVER (PARTITION BY policy ORDER BY hits DESC, recipient_key)"
                " AS n FROM (SELECT o.policy, d.recipient_key, COUNT(*) AS hits"
                f" FROM outcomes o JOIN deliveries d ON d.id = o.delivery_id WHERE {window}"
                " AND o.action <> 'forward' GROUP BY o.policy, d.recipient_key) AS per_person)"
                " AS ranked WHERE n <= ? ORDER BY policy, hits DESC, recipient_key",
                (start, top),
            )
            return counts, samples, people

        counts, samples, people = await self._scan(job)
        tallies: dict[str, dict[str, int]] = {}
        for policy, action, n in counts:
            tallies.setdefault(policy, {})[action] = int(n)
        shown: dict[str, list[ShadowExample]] = {}
        for policy, action, delivery_id, recipient, campaign, reason, at, until in samples:
            shown.setdefault(policy, []).append(
                ShadowExample(
                    delivery_id,
                    recipient,
                    campaign,
                    action,
                    reason,
                    from_micros(at),
                    codec.moment(until),
                )
            )
        affected: dict[str, list[tuple[str, int]]] = {}
        for policy, key, hits in people:
            affected.setdefault(policy, []).append((key, int(hits)))
        return [
            ShadowTally(name, tallies[name], shown.get(name, []), affected.get(name, []))
            for name in sorted(tallies)
        ]

    async def queue_ages(self) -> QueueAges:
        async def job(tx: Tx) -> tuple[Sequence[Any] | None, Sequence[Any] | None]:
            held = await _one(
                tx,
                "SELECT MIN(updated_at) FROM deliveries"
                " WHERE state = 'held' AND (hold_origin IS NULL OR hold_origin <> 'pause')",
            )
            due = await _one(
                tx,
                "SELECT MIN(due_at) FROM deliveries"
                " WHERE state IN ('queued', 'delayed', 'deferred')",
            )
            return held, due

        held, due = await self._scan(job)
        return QueueAges(
            codec.moment(held[0]) if held else None, codec.moment(due[0]) if due else None
        )
