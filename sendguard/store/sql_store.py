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

from datetime import datetime

from sendguard.clock import to_micros
from sendguard.pruning import PruneCutoffs
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
from sendguard.store.sql_jobs import Job, SqlJobs, Tx, Write
from sendguard.store.sql_outbox import SqlOutbox
from sendguard.store.sql_reports import SqlReports
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
    SqlReports,
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
