"""The store contract in SQL, written once for every SQL backend.

Each operation is an `async def job(tx)` run in one transaction by the backend: SQLite drives it
on its database thread inside a group-committed batch, PostgreSQL on a pooled connection (a
job that writes with one statement, `_write_one`, there without BEGIN and COMMIT: the
statement commits on its own).
Statements use `?` placeholders; a backend rewrites them if its driver wants others. Times are
integer microseconds since the epoch in every backend, so comparisons are exact and alike.

Reads come in two kinds. A point read (`_read`: a row by key, an index range of a bounded
number of rows) may run on the event loop's thread. A read whose cost grows with the tables
(`_scan`: an aggregate such as `count_by_state` or `campaigns`, a listing, a whole page's
history) must not: a backend runs it where it cannot stall the event loop (SQLite: on a reader
thread; PostgreSQL: on a pooled connection, as every query). Lists of rows are fetched in one
statement per kind for a whole page, never one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sendguard.approvals import Campaign, CampaignSummary
from sendguard.clock import from_micros, to_micros
from sendguard.message import DeliveryState
from sendguard.pruning import PruneCutoffs
from sendguard.reports import QueueAges, ShadowExample, ShadowTally
from sendguard.store import codec
from sendguard.store.base import Store
from sendguard.store.sql_audit import SqlAudit
from sendguard.store.sql_deliveries import SqlDeliveries
from sendguard.store.sql_dispatch import DUE_STATES, SENDING_TRANSITIONS, SqlDispatch
from sendguard.store.sql_facts_events import SqlFactsEvents
from sendguard.store.sql_history import SqlHistory
from sendguard.store.sql_intake import (
    DELIVERY_INSERT_COLUMNS,
    MESSAGE_INSERT,
    REQUIREMENT_INSERT,
    SqlIntake,
    delivery_values,
    message_values,
    premise_keys,
)
from sendguard.store.sql_jobs import Job, SqlJobs, Tx, Write, _one
from sendguard.store.sql_outbox import SqlOutbox
from sendguard.store.sql_review import SqlReview

__all__ = [
    "DELIVERY_INSERT_COLUMNS",
    "DUE_STATES",
    "MESSAGE_INSERT",
    "REQUIREMENT_INSERT",
    "SENDING_TRANSITIONS",
    "Job",
    "SqlStore",
    "Tx",
    "Write",
    "delivery_values",
    "message_values",
    "premise_keys",
]


class SqlStore(
    SqlAudit,
    SqlReview,
    SqlFactsEvents,
    SqlHistory,
    SqlDeliveries,
    SqlDispatch,
    SqlIntake,
    SqlOutbox,
    SqlJobs,
    Store,
):
    """Every contract operation; a backend supplies transactions, locks and lifecycle."""

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

    async def prune(self, before: datetime | PruneCutoffs) -> int:
        cut = before if isinstance(before, PruneCutoffs) else PruneCutoffs.uniform(before)

        async def job(tx: Tx) -> int:
            gone = 0
            if cut.deliveries is not None:
                gone = await self._prune_deliveries(tx, to_micros(cut.deliveries))
                self._cache.clear()  # messages may be gone
            # Send history outlives its deliveries when a policy counts further back than the
            # timeline is kept, so it goes by its own time only. Suppressions never go.
            # Event types some policy reads at any age (a purchase) outlive the events' cutoff.
            kept = sorted(cut.events_kept)
            spare = f" AND type NOT IN ({', '.join('?' * len(kept))})" if kept else ""
            for table, column, cutoff, extra in (
                ("history", "at", cut.history, ""),
                ("events", "at", cut.events, spare),
                ("facts", "observed_at", cut.facts, ""),
                ("idempotency", "created_at", cut.idempotency, ""),
            ):
                if cutoff is not None:
                    await tx.execute(
                        f"DELETE FROM {table} WHERE {column} < ?{extra}",
                        (to_micros(cutoff), *(kept if extra else ())),
                    )
            return gone

        return await self._write(job)

    @staticmethod
    async def _prune_deliveries(tx: Tx, cutoff: int) -> int:
        done = "state IN ('sent', 'failed', 'dropped') AND updated_at < ?"
        for table in ("transitions", "outcomes", "waits"):
            await tx.execute(
                f"DELETE FROM {table} WHERE delivery_id IN"
                f" (SELECT id FROM deliveries WHERE {done})",
                (cutoff,),
            )
        gone = await tx.execute(f"DELETE FROM deliveries WHERE {done}", (cutoff,))
        # A message a reviewer corrected stays while deliveries of its edited copy exist.
        orphans = (
            "SELECT id FROM messages m WHERE received_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.message_id = m.id) AND NOT EXISTS"
            " (SELECT 1 FROM edits e JOIN deliveries d ON d.message_id = e.edited_message_id"
            " WHERE e.message_id = m.id OR e.origin_message_id = m.id)"
        )
        await tx.execute(f"DELETE FROM requirements WHERE message_id IN ({orphans})", (cutoff,))
        await tx.execute(f"DELETE FROM esp_requests WHERE message_id IN ({orphans})", (cutoff,))
        await tx.execute(f"DELETE FROM messages WHERE id IN ({orphans})", (cutoff,))
        return gone

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
