"""Facts, events and suppressions (`ContextWrites`, `SuppressionList` and their reads in
`PolicyReads`): what sendguard is told about recipients.

Transactions that span two concerns, on purpose: `add_event` writes the outbox rows of a
reported bounce (`_emit`, `sql_outbox.py`) with the event; `add_suppressions` and
`lift_suppression` write their audit rows (the audit log, `sql_audit.py`) in their own
transaction, so a suppression never changes without its audit entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sendguard.address import recipient_key
from sendguard.clock import from_micros, to_micros
from sendguard.events import Event, event_type
from sendguard.facts import Fact
from sendguard.lifecycle import LifecycleEvent
from sendguard.store import codec
from sendguard.store.sql_jobs import Tx, _one, _where
from sendguard.store.sql_outbox import SqlOutbox
from sendguard.suppressions import Suppression, SuppressionPage, SuppressionQuery, SuppressionReason


class SqlFactsEvents(SqlOutbox):
    """Facts, events and suppressions."""

    async def put_fact(self, fact: Fact) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO facts (key, contact, value, observed_at, superseded_by)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key, contact) DO UPDATE SET value = excluded.value,"
                " observed_at = excluded.observed_at, superseded_by = excluded.superseded_by"
                " WHERE excluded.observed_at >= facts.observed_at",
                (
                    fact.key,
                    codec.contact_key(fact.contact),
                    fact.value,
                    to_micros(fact.observed_at),
                    fact.superseded_by,
                ),
            )

        await self._write(job)

    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx,
                "SELECT value, observed_at, superseded_by, contact FROM facts"
                " WHERE key = ? AND contact = ?",
                (key, codec.contact_key(contact)),
            )

        row = await self._read(job)
        if row is None:
            return None
        return Fact(key, row[0], from_micros(row[1]), row[3] or None, row[2])

    async def add_event(self, event: Event) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO events (type, recipient_key, message_id, at, offer)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    str(event.type),
                    recipient_key(event.recipient),
                    event.message_id,
                    to_micros(event.at),
                    event.offer,
                ),
            )
            if self._webhook_targets and event.type == "bounce" and event.message_id:
                bounced = await tx.fetch(
                    "SELECT id FROM deliveries WHERE message_id = ? AND recipient_key = ?",
                    (event.message_id, recipient_key(event.recipient)),
                )
                for (delivery_id,) in bounced:
                    await self._emit(
                        tx,
                        delivery_id,
                        LifecycleEvent.BOUNCED,
                        "a bounce was reported",
                        to_micros(event.at),
                    )

        await self._write(job)

    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                "SELECT type, recipient_key, at, message_id, offer FROM events"
                " WHERE recipient_key = ? AND at >= ? ORDER BY at",
                (recipient_key(recipient), to_micros(since) if since else 0),
            )

        return [
            Event(event_type(r[0]), r[1], from_micros(r[2]), r[3], r[4])
            for r in await self._read(job)
        ]

    _SUPPRESSION_SELECT = (
        "SELECT address, reason, source, created_at, created_by, note FROM suppressions"
    )

    @staticmethod
    def _suppression(row: Sequence[Any]) -> Suppression:
        return Suppression(
            row[0], SuppressionReason(row[1]), row[2], from_micros(row[3]), row[4], row[5]
        )

    async def add_suppressions(
        self, suppressions: Sequence[Suppression], at: datetime
    ) -> Sequence[bool]:
        audited = to_micros(at)

        async def job(tx: Tx) -> list[bool]:
            added = []
            for item in suppressions:
                key = recipient_key(item.address)
                changed = await tx.execute(
                    "INSERT INTO suppressions (address_key, address, reason, source, created_at,"
                    " created_by, note) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (address_key) DO NOTHING",
                    (
                        key,
                        item.address,
                        item.reason.value,
                        item.source,
                        to_micros(item.created_at),
                        item.created_by,
                        item.note,
                    ),
                )
                if changed:
                    note = f"{item.reason.value} from {item.source}"
                    await tx.execute(
                        "INSERT INTO audit (at, actor, action, target, note, count)"
                        " VALUES (?, ?, 'suppress', ?, ?, 1)",
                        (
                            audited,
                            item.created_by,
                            f"suppression:{key}",
                            f"{note}: {item.note}" if item.note else note,
                        ),
                    )
                added.append(bool(changed))
            return added

        return await self._write(job)

    async def get_suppression(self, address: str) -> Suppression | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx, f"{self._SUPPRESSION_SELECT} WHERE address_key = ?", (recipient_key(address),)
            )

        row = await self._read(job)
        return None if row is None else self._suppression(row)

    async def list_suppressions(self, query: SuppressionQuery) -> SuppressionPage:
        where, args = _where(
            ("address_key = ?", recipient_key(query.address) if query.address else None),
            ("reason = ?", query.reason.value if query.reason else None),
            ("address_key > ?", query.after),
        )
        sql = self._SUPPRESSION_SELECT + where

        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(sql + " ORDER BY address_key LIMIT ?", [*args, query.limit + 1])

        rows = await self._read(job)
        page = [self._suppression(r) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return SuppressionPage(page, recipient_key(page[-1].address) if more and page else None)

    async def lift_suppression(
        self,
        address: str,
        actor: str,
        at: datetime,
        note: str = "",
        *,
        made_by: datetime | None = None,
    ) -> Suppression | None:
        key = recipient_key(address)
        newest = to_micros(made_by) if made_by is not None else None

        async def job(tx: Tx) -> Sequence[Any] | None:
            row = await _one(tx, f"{self._SUPPRESSION_SELECT} WHERE address_key = ?", (key,))
            if row is None or (newest is not None and row[3] > newest):
                return None
            await tx.execute("DELETE FROM suppressions WHERE address_key = ?", (key,))
            await tx.execute(
                "INSERT INTO audit (at, actor, action, target, note, count)"
                " VALUES (?, ?, 'lift', ?, ?, 1)",
                (to_micros(at), actor, f"suppression:{key}", note or f"was {row[1]}"),
            )
            return row

        row = await self._write(job)
        return None if row is None else self._suppression(row)
