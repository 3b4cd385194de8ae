"""Retention (`Pruning`): forgetting what retention no longer needs.

One transaction spans every concern, by its nature: `prune` deletes done deliveries with their
timelines, waits and orphaned messages (intake's and the dispatcher's tables), and old send
history, events, facts and idempotency keys, in one job. The deliveries and what refers to
them must go together; the rest goes with them for simplicity, not of necessity.
"""

from __future__ import annotations

from datetime import datetime

from sendguard.clock import to_micros
from sendguard.pruning import PruneCutoffs
from sendguard.store import sql_content
from sendguard.store.sql_jobs import SqlJobs, Tx


class SqlRetention(SqlJobs):
    """Pruning by retention's cutoffs."""

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
        await tx.execute(sql_content.prune_of(orphans), (cutoff,))
        await tx.execute(f"DELETE FROM messages WHERE id IN ({orphans})", (cutoff,))
        await tx.execute(sql_content.PRUNE_UNREFERENCED, (cutoff,))
        return gone
