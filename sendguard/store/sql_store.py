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

from sendguard.address import recipient_key
from sendguard.approvals import Approval, Campaign, CampaignSummary, ContentApproval, GlobalPause
from sendguard.audit import AuditEntry
from sendguard.clock import from_micros, to_micros
from sendguard.errors import Conflict
from sendguard.message import DeliveryState, Message
from sendguard.pruning import PruneCutoffs
from sendguard.reports import QueueAges, ShadowExample, ShadowTally
from sendguard.review_queue import Edit, EditedPart, HeldGroup, HeldQuery, HeldQueue, ReviewNotice
from sendguard.store import codec
from sendguard.store.base import Store
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
from sendguard.store.sql_jobs import Job, SqlJobs, Tx, Write, _marks, _one
from sendguard.store.sql_outbox import SqlOutbox

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
    SqlFactsEvents, SqlHistory, SqlDeliveries, SqlDispatch, SqlIntake, SqlOutbox, SqlJobs, Store
):
    """Every contract operation; a backend supplies transactions, locks and lifecycle."""

    async def count_by_state(self) -> dict[DeliveryState, int]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch("SELECT state, COUNT(*) FROM deliveries GROUP BY state")

        counts = dict.fromkeys(DeliveryState, 0)
        counts.update({DeliveryState(state): n for state, n in await self._scan(job)})
        return counts

    @staticmethod
    def _campaign(row: Sequence[Any]) -> Campaign:
        return Campaign(
            row[0], Approval(row[1]) if row[1] else None, bool(row[2]), codec.moment(row[3]), row[4]
        )

    async def get_campaign(self, name: str) -> Campaign | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx,
                "SELECT name, approval, paused, updated_at, updated_by FROM campaigns"
                " WHERE name = ?",
                (name,),
            )

        row = await self._read(job)
        return None if row is None else self._campaign(row)

    async def set_campaign(self, campaign: Campaign) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO campaigns (name, approval, paused, updated_at, updated_by)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " approval = excluded.approval, paused = excluded.paused,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (
                    campaign.name,
                    campaign.approval.value if campaign.approval else None,
                    int(campaign.paused),
                    codec.micros(campaign.updated_at),
                    campaign.updated_by,
                ),
            )

        await self._write(job)

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

    async def add_approvals(self, approvals: Sequence[ContentApproval]) -> None:
        if not approvals:
            return

        async def job(tx: Tx) -> None:
            for approval in approvals:
                await tx.execute(
                    "INSERT INTO approvals (campaign, content_hash, approved_by, approved_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (campaign, content_hash) DO UPDATE SET"
                    " approved_by = excluded.approved_by, approved_at = excluded.approved_at",
                    (
                        approval.campaign,
                        approval.content_hash,
                        approval.approved_by,
                        to_micros(approval.approved_at),
                    ),
                )

        await self._write(job)

    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                "SELECT content_hash, approved_by, approved_at FROM approvals"
                " WHERE campaign = ? ORDER BY approved_at DESC, content_hash",
                (campaign,),
            )

        return [
            ContentApproval(campaign, r[0], r[1], from_micros(r[2])) for r in await self._read(job)
        ]

    async def get_pause(self) -> GlobalPause:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx, "SELECT paused, updated_at, updated_by, note FROM global_pause WHERE id = 1"
            )

        row = await self._read(job)
        if row is None:
            return GlobalPause()
        return GlobalPause(bool(row[0]), codec.moment(row[1]), row[2], row[3])

    async def set_pause(self, pause: GlobalPause) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO global_pause (id, paused, updated_at, updated_by, note)"
                " VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " paused = excluded.paused, updated_at = excluded.updated_at,"
                " updated_by = excluded.updated_by, note = excluded.note",
                (int(pause.paused), codec.micros(pause.updated_at), pause.updated_by, pause.note),
            )

        await self._write(job)

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

    async def add_audit(self, entry: AuditEntry) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO audit (at, actor, action, target, note, count)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    to_micros(entry.at),
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.note,
                    entry.count,
                ),
            )

        await self._write(job)

    async def audit(self, limit: int = 100) -> Sequence[AuditEntry]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                "SELECT id, at, actor, action, target, note, count FROM audit"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )

        return [
            AuditEntry(from_micros(r[1]), r[2], r[3], r[4], r[5], r[6], r[0])
            for r in await self._read(job)
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

    @staticmethod
    def _held_where(query: HeldQuery) -> tuple[str, list[Any]]:
        where = ["d.state = 'held'"]
        args: list[Any] = []
        if query.campaign is not None:
            where.append("d.campaign = ?")
            args.append(query.campaign)
        if query.recipient is not None:
            where.append("d.recipient_key = ?")
            args.append(recipient_key(query.recipient))
        if query.policy == "pause":
            where.append("d.hold_origin = 'pause'")
        elif query.policy is not None:
            # The policies holding a delivery are those that said hold in its latest decision.
            where.append(
                "COALESCE(d.hold_origin, 'policy') <> 'pause' AND EXISTS (SELECT 1 FROM"
                " outcomes o WHERE o.delivery_id = d.id AND o.policy = ? AND o.action = 'hold'"
                " AND o.mode = 'enforce' AND o.at ="
                " (SELECT MAX(l.at) FROM outcomes l WHERE l.delivery_id = d.id))"
            )
            args.append(query.policy)
        return " AND ".join(where), args

    async def held_queue(self, query: HeldQuery) -> HeldQueue:
        where, args = self._held_where(query)
        # The same order in both statements (the database's collation), so the page's rows
        # fall in the groups in the order the groups are listed.
        order = "d.campaign IS NULL, d.campaign"

        async def job(
            tx: Tx,
        ) -> tuple[list[Sequence[Any]], list[Sequence[Any]], list[Sequence[Any]]]:
            groups = await tx.fetch(
                "SELECT d.campaign, COUNT(*), MIN(d.updated_at), MIN(d.due_at)"
                f" FROM deliveries d WHERE {where} GROUP BY d.campaign ORDER BY {order}",
                args,
            )
            rows: list[Sequence[Any]] = []
            if query.limit > 0:
                # The page's ids first (a sort of narrow rows), then those rows in full.
                rows = await tx.fetch(
                    f"{codec.DELIVERY_SELECT} WHERE d.id IN (SELECT d.id FROM deliveries d"
                    f" WHERE {where} ORDER BY {order}, d.id DESC LIMIT ? OFFSET ?)"
                    f" ORDER BY {order}, d.id DESC",
                    [*args, query.limit, max(0, query.offset)],
                )
            reviewed = await tx.fetch(
                "SELECT name, approval, paused, updated_at, updated_by FROM campaigns"
            )
            return groups, rows, reviewed

        groups, rows, reviewed = await self._scan(job)
        found = [
            HeldGroup(name, int(n), from_micros(oldest), codec.moment(expires))
            for name, n, oldest, expires in groups
        ]
        return HeldQueue(
            found,
            [codec.delivery_from_row(r) for r in rows],
            sum(g.count for g in found),
            [self._campaign(r) for r in reviewed],
        )

    _EDIT_SELECT = (
        "SELECT id, campaign, message_id, edited_message_id, origin_message_id, actor, at,"
        " changed, diff, note, count FROM edits"
    )

    @staticmethod
    def _edit(row: Sequence[Any]) -> Edit:
        return Edit(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            from_micros(row[6]),
            tuple(EditedPart(p) for p in row[7].split(",") if p),
            row[8],
            row[9],
            int(row[10]),
        )

    async def add_edit(self, edit: Edit, message: Message, content: bytes) -> Edit:
        at = to_micros(edit.at)
        changed = ",".join(p.value for p in edit.changed)

        async def job(tx: Tx) -> int:
            copied = await tx.execute(
                "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers,"
                " fields, campaign, class, size, content_hash, content, offer, smtputf8,"
                " body_8bit) SELECT ?, received_at, ingress, mail_from, recipients, ?, fields,"
                " campaign, class, ?, ?, ?, offer, smtputf8, body_8bit FROM messages"
                " WHERE id = ?",
                (
                    edit.edited_message_id,
                    codec.dump_headers(message.headers),
                    len(content),
                    message.content_hash,
                    content,
                    edit.message_id,
                ),
            )
            if copied == 0:
                raise Conflict(f"no message {edit.message_id}")
            await tx.execute(
                "INSERT INTO requirements (message_id, key)"
                " SELECT ?, key FROM requirements WHERE message_id = ?",
                (edit.edited_message_id, edit.message_id),
            )
            # A delivery a worker holds a live claim on is being judged now: it is not moved.
            moved = await tx.execute(
                "UPDATE deliveries SET message_id = ? WHERE message_id = ? AND campaign = ?"
                " AND state = 'held' AND (lease_until IS NULL OR lease_until < ?)",
                (edit.edited_message_id, edit.message_id, edit.campaign, at),
            )
            if moved == 0:
                raise Conflict(f"no delivery of message {edit.message_id} is held any more")
            await tx.execute(
                "INSERT INTO edits (id, campaign, message_id, edited_message_id,"
                " origin_message_id, actor, at, changed, diff, note, count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    edit.id,
                    edit.campaign,
                    edit.message_id,
                    edit.edited_message_id,
                    edit.origin_message_id,
                    edit.actor,
                    at,
                    changed,
                    edit.diff,
                    edit.note,
                    moved,
                ),
            )
            return moved

        moved = await self._write(job)
        return Edit(
            edit.id,
            edit.campaign,
            edit.message_id,
            edit.edited_message_id,
            edit.origin_message_id,
            edit.actor,
            edit.at,
            edit.changed,
            edit.diff,
            edit.note,
            moved,
        )

    async def edits(self, campaign: str) -> Sequence[Edit]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                f"{self._EDIT_SELECT} WHERE campaign = ? ORDER BY at DESC, id DESC", (campaign,)
            )

        return [self._edit(r) for r in await self._read(job)]

    async def edit_making(self, message_id: str) -> Edit | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, f"{self._EDIT_SELECT} WHERE edited_message_id = ?", (message_id,))

        row = await self._read(job)
        return None if row is None else self._edit(row)

    async def review_notices(self) -> Sequence[ReviewNotice]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                "SELECT campaign, held_at, sent_at FROM review_notices ORDER BY held_at"
            )

        return [
            ReviewNotice(r[0] or None, from_micros(r[1]), codec.moment(r[2]))
            for r in await self._read(job)
        ]

    async def notice_held(
        self, campaigns: Sequence[str | None], at: datetime
    ) -> Sequence[str | None]:
        if not campaigns:
            return []

        async def job(tx: Tx) -> list[str | None]:
            first = []
            for name in campaigns:
                # '' stands for "no campaign": a primary key cannot hold NULL usefully.
                if await tx.execute(
                    "INSERT INTO review_notices (campaign, held_at) VALUES (?, ?)"
                    " ON CONFLICT (campaign) DO NOTHING",
                    (name or "", to_micros(at)),
                ):
                    first.append(name)
            return first

        return await self._write(job)

    async def notice_sent(self, campaign: str | None, at: datetime) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "UPDATE review_notices SET sent_at = ? WHERE campaign = ?",
                (to_micros(at), campaign or ""),
            )

        await self._write(job)

    async def forget_notices(self, keep: Sequence[str | None]) -> None:
        kept = sorted({name or "" for name in keep})

        async def job(tx: Tx) -> None:
            if kept:
                await tx.execute(
                    f"DELETE FROM review_notices WHERE campaign NOT IN ({_marks(len(kept))})",
                    kept,
                )
            else:
                await tx.execute("DELETE FROM review_notices")

        await self._write(job)
