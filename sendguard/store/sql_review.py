"""Review (`ReviewState`): campaign decisions, content approvals, the global pause, the
held queue, reviewers' edits and the notices sent to reviewers.

One transaction spans two concerns, on purpose: `add_edit` copies the message (with its fact
requirements) and moves its held deliveries to the copy (intake's tables, `sql_intake.py`) in
the transaction that records the edit, so no delivery ever points at a half-made copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sendguard.address import recipient_key
from sendguard.approvals import Approval, Campaign, ContentApproval, GlobalPause
from sendguard.clock import from_micros, to_micros
from sendguard.errors import Conflict
from sendguard.message import Message
from sendguard.review_queue import Edit, EditedPart, HeldGroup, HeldQuery, HeldQueue, ReviewNotice
from sendguard.store import codec
from sendguard.store.sql_jobs import SqlJobs, Tx, _marks, _one


class SqlReview(SqlJobs):
    """Campaign decisions, approvals, the pause, the held queue, edits, reviewer notices."""

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

    async def add_approvals(self, approvals: Sequence[ContentApproval]) -> None:
        if not approvals:
            return

        async def job(tx: Tx) -> None:
            for approval in approvals:
                # Approved again: the newer approval's reviewer and time.
                await tx.execute(
                    "INSERT INTO approvals (campaign, content_hash, links, approved_by,"
                    " approved_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (campaign, content_hash, COALESCE(links, '*'))"
                    " DO UPDATE SET approved_by = excluded.approved_by,"
                    " approved_at = excluded.approved_at",
                    (
                        approval.campaign,
                        approval.content_hash,
                        approval.links,
                        approval.approved_by,
                        to_micros(approval.approved_at),
                    ),
                )

        await self._write(job)

    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                "SELECT content_hash, approved_by, approved_at, links FROM approvals"
                " WHERE campaign = ? ORDER BY approved_at DESC, content_hash, links",
                (campaign,),
            )

        return [self._approval(campaign, r) for r in await self._read(job)]

    @staticmethod
    def _approval(campaign: str, row: Sequence[Any]) -> ContentApproval:
        """An approval from its (content_hash, approved_by, approved_at, links) columns."""
        return ContentApproval(campaign, row[0], row[1], from_micros(row[2]), row[3])

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
                " body_8bit, links) SELECT ?, received_at, ingress, mail_from, recipients, ?,"
                " fields, campaign, class, ?, ?, ?, offer, smtputf8, body_8bit, ? FROM messages"
                " WHERE id = ?",
                (
                    edit.edited_message_id,
                    codec.dump_headers(message.headers),
                    len(content),
                    message.content_hash,
                    content,
                    message.links,
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
