"""The embedded store: one SQLite file in WAL mode, `synchronous=FULL`, group commit.

`sqlite_db.py` runs the database (thread, group commit, file lock), `sqlite_schema.py` holds
the schema; this module is the store contract in SQL. SQLite is single-instance: several
instances share PostgreSQL instead.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sendguard.address import domain_of, recipient_key
from sendguard.clock import from_micros, to_micros
from sendguard.errors import Conflict
from sendguard.message import Delivery, DeliveryState, Message, MessageClass, Transition
from sendguard.store import codec
from sendguard.store.base import (
    Approval,
    AuditEntry,
    Campaign,
    CampaignSummary,
    Change,
    DeliveryPage,
    DeliveryQuery,
    Event,
    EventType,
    Fact,
    HistoryEntry,
    IdempotencyRecord,
    NewDelivery,
    RecordedOutcome,
    Store,
    StoreStats,
)
from sendguard.store.keyed_lock import KeyedLock
from sendguard.store.sqlite_db import SQLiteDatabase
from sendguard.verdict import Decision


class SQLiteStore(Store):
    """The embedded store. `path` is the database file; its directory is created if missing."""

    def __init__(self, path: Path, *, busy_timeout: timedelta = timedelta(seconds=5)) -> None:
        self._db = SQLiteDatabase(path, busy_timeout)
        self._read = self._db.read
        self._write = self._db.write
        self._locks = KeyedLock()

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def check(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def recover(self, now: datetime) -> int:
        # The file lock guarantees no other process works on this database, so every claim
        # left behind belongs to a process that is gone.
        def job(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "UPDATE deliveries SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL"
            )
            return cur.rowcount

        count: int = await self._write(job)
        return count

    @property
    def stats(self) -> StoreStats:
        return StoreStats(writes=self._db.writes, commits=self._db.commits)

    # serialisation ---------------------------------------------------------------------------
    def lock_recipients(self, recipients: Sequence[str]) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(recipient_key(r) for r in recipients)

    # messages --------------------------------------------------------------------------------
    async def add_message(
        self,
        message: Message,
        content: bytes,
        deliveries: Sequence[NewDelivery],
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        def job(c: sqlite3.Connection) -> None:
            now = to_micros(message.received_at)
            if idempotency is not None:
                expired = codec.micros(idempotency.reusable_before) or 0
                cur = c.execute(
                    "INSERT INTO idempotency (key, message_id, response, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                    " message_id = excluded.message_id, response = excluded.response,"
                    " created_at = excluded.created_at WHERE idempotency.created_at < ?",
                    (idempotency.key, idempotency.message_id, idempotency.response, now, expired),
                )
                if cur.rowcount == 0:
                    raise Conflict(f"idempotency key {idempotency.key!r} was used before")
            c.execute(
                "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers,"
                " fields, campaign, size, content_hash, content)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.id,
                    now,
                    message.ingress,
                    message.mail_from,
                    json.dumps(message.recipients, ensure_ascii=False),
                    codec.dump_headers(message.headers),
                    codec.dump_fields(message.fields),
                    message.fields.campaign,
                    message.size,
                    message.content_hash,
                    content,
                ),
            )
            c.executemany(
                "INSERT OR IGNORE INTO requirements (message_id, key) VALUES (?, ?)",
                [(message.id, r.key) for r in message.fields.requires],
            )
            for new in deliveries:
                c.execute(
                    "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain,"
                    " campaign, state, created_at, updated_at, due_at, hold_origin)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.id,
                        message.id,
                        new.recipient,
                        recipient_key(new.recipient),
                        domain_of(new.recipient),
                        message.fields.campaign,
                        new.state.value,
                        now,
                        now,
                        codec.micros(new.due_at),
                        new.hold_origin if new.state is DeliveryState.HELD else None,
                    ),
                )
                self._record(c, new.id, new.state, new.reason, now, new.decision)
                if new.state is DeliveryState.QUEUED:
                    self._reserve(c, new.id, now)

        await self._write(job)

    @staticmethod
    def _record(
        c: sqlite3.Connection,
        delivery_id: str,
        state: DeliveryState,
        reason: str,
        at: int,
        decision: Decision | None,
    ) -> None:
        c.execute(
            "INSERT INTO transitions (delivery_id, seq, at, state, reason) VALUES (?, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE delivery_id = ?), ?, ?, ?)",
            (delivery_id, delivery_id, at, state.value, reason),
        )
        if decision is None:
            return
        for outcome in decision.outcomes:
            policy, action, mode, why, error = codec.outcome_columns(outcome)
            c.execute(
                "INSERT INTO outcomes (delivery_id, seq, at, policy, action, mode, reason,"
                " until, error) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM outcomes"
                " WHERE delivery_id = ?), ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery_id,
                    delivery_id,
                    at,
                    policy,
                    action,
                    mode,
                    why,
                    codec.micros(outcome.verdict.until),
                    error,
                ),
            )

    @staticmethod
    def _reserve(c: sqlite3.Connection, delivery_id: str, at: int) -> None:
        c.execute(
            "INSERT OR IGNORE INTO history (delivery_id, recipient_key, domain, campaign, class,"
            " content_hash, at) SELECT d.id, d.recipient_key, d.domain, d.campaign,"
            " json_extract(m.fields, '$.class'), m.content_hash, ? FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id WHERE d.id = ?",
            (at, delivery_id),
        )

    async def get_message(self, message_id: str) -> Message | None:
        row = await self._read(
            lambda c: c.execute(f"{codec.MESSAGE_SELECT} WHERE id = ?", (message_id,)).fetchone()
        )
        return None if row is None else codec.message_from_row(row)

    async def message_content(self, message_id: str) -> bytes:
        row = await self._read(
            lambda c: c.execute(
                "SELECT content FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        )
        if row is None:
            raise Conflict(f"message {message_id} has no stored content")
        return bytes(row[0])

    async def idempotent_response(self, key: str, since: datetime) -> IdempotencyRecord | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT message_id, response FROM idempotency WHERE key = ? AND created_at >= ?",
                (key, to_micros(since)),
            ).fetchone()
        )
        return None if row is None else IdempotencyRecord(key, row[0], bytes(row[1]))

    # deliveries ------------------------------------------------------------------------------
    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        row = await self._read(
            lambda c: c.execute(
                f"{codec.DELIVERY_SELECT} WHERE d.id = ?", (delivery_id,)
            ).fetchone()
        )
        return None if row is None else codec.delivery_from_row(row)

    async def deliveries_of(self, message_id: str) -> Sequence[Delivery]:
        rows = await self._read(
            lambda c: c.execute(
                f"{codec.DELIVERY_SELECT} WHERE d.message_id = ? ORDER BY d.rowid", (message_id,)
            ).fetchall()
        )
        return [codec.delivery_from_row(r) for r in rows]

    async def list_deliveries(self, query: DeliveryQuery) -> DeliveryPage:
        where: list[str] = []
        args: list[Any] = []
        if query.state is not None:
            where.append("d.state = ?")
            args.append(query.state.value)
        if query.campaign is not None:
            where.append("d.campaign = ?")
            args.append(query.campaign)
        if query.recipient is not None:
            where.append("d.recipient_key = ?")
            args.append(recipient_key(query.recipient))
        if query.since is not None:
            where.append("d.created_at >= ?")
            args.append(to_micros(query.since))
        if query.after is not None:
            where.append("d.id < ?")
            args.append(query.after)
        sql = codec.DELIVERY_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY d.id DESC LIMIT ?"
        args.append(query.limit + 1)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        page = [codec.delivery_from_row(r) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return DeliveryPage(page, page[-1].id if more and page else None)

    async def transitions(self, delivery_id: str) -> Sequence[Transition]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT at, state, reason FROM transitions WHERE delivery_id = ? ORDER BY seq",
                (delivery_id,),
            ).fetchall()
        )
        return [Transition(from_micros(at), DeliveryState(state), why) for at, state, why in rows]

    async def outcomes(self, delivery_id: str) -> Sequence[RecordedOutcome]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT at, policy, action, mode, reason, until, error FROM outcomes"
                " WHERE delivery_id = ? ORDER BY seq",
                (delivery_id,),
            ).fetchall()
        )
        return [
            RecordedOutcome(
                from_micros(r[0]),
                codec.make_outcome(r[1], r[2], r[3], r[4], codec.moment(r[5]), r[6]),
            )
            for r in rows
        ]

    async def wake_waiting(
        self, now: datetime, *, fact_key: str | None = None, recipient: str | None = None
    ) -> int:
        at = to_micros(now)

        def job(c: sqlite3.Connection) -> int:
            woken = 0
            if fact_key is not None:
                woken += c.execute(
                    "UPDATE deliveries SET due_at = ? WHERE state = 'delayed' AND due_at > ?"
                    " AND message_id IN (SELECT message_id FROM requirements WHERE key = ?)",
                    (at, at, fact_key),
                ).rowcount
            if recipient is not None:
                woken += c.execute(
                    "UPDATE deliveries SET due_at = ? WHERE state = 'delayed' AND due_at > ?"
                    " AND recipient_key = ?",
                    (at, at, recipient_key(recipient)),
                ).rowcount
            return woken

        count: int = await self._write(job)
        return count

    async def count_by_state(self) -> dict[DeliveryState, int]:
        rows = await self._read(
            lambda c: c.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        )
        counts = dict.fromkeys(DeliveryState, 0)
        counts.update({DeliveryState(state): n for state, n in rows})
        return counts

    # work ------------------------------------------------------------------------------------
    async def claim_due(
        self, now: datetime, owner: str, limit: int, lease: timedelta
    ) -> Sequence[Delivery]:
        at, until = to_micros(now), to_micros(now + lease)

        def job(c: sqlite3.Connection) -> list[Any]:
            ids = [
                row[0]
                for row in c.execute(
                    "SELECT id FROM deliveries"
                    " WHERE state IN ('queued', 'delayed', 'deferred', 'held')"
                    " AND due_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                    " UNION ALL SELECT id FROM deliveries WHERE state = 'sending'"
                    " AND (lease_until IS NULL OR lease_until < ?) LIMIT ?",
                    (at, at, at, limit),
                )
            ]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            c.execute(
                f"UPDATE deliveries SET owner = ?, lease_until = ? WHERE id IN ({marks})",
                (owner, until, *ids),
            )
            return c.execute(
                f"{codec.DELIVERY_SELECT} WHERE d.id IN ({marks}) ORDER BY d.due_at",
                ids,
            ).fetchall()

        rows = await self._write(job)
        return [codec.delivery_from_row(r) for r in rows]

    async def release(self, delivery_ids: Sequence[str], owner: str) -> None:
        if not delivery_ids:
            return
        marks = ",".join("?" * len(delivery_ids))

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE deliveries SET owner = NULL, lease_until = NULL"
                f" WHERE owner = ? AND id IN ({marks})",
                (owner, *delivery_ids),
            )

        await self._write(job)

    async def next_due_at(self) -> datetime | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT MIN(due_at) FROM deliveries"
                " WHERE state IN ('queued', 'delayed', 'deferred', 'held')"
            ).fetchone()
        )
        return codec.moment(row[0]) if row else None

    async def change(self, delivery_id: str, change: Change) -> Delivery:
        def job(c: sqlite3.Connection) -> Any:
            row = c.execute(
                "SELECT state, owner, lease_until FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            if row is None:
                raise Conflict(f"no delivery {delivery_id}")
            state, owner, _ = row
            if change.expect is not None and DeliveryState(state) not in change.expect:
                allowed = ", ".join(sorted(s.value for s in change.expect))
                raise Conflict(f"delivery {delivery_id} is {state}, not {allowed}")
            if change.owner is not None and owner != change.owner:
                raise Conflict(f"delivery {delivery_id} is no longer claimed by {change.owner}")
            at = to_micros(change.at)
            keep_claim = change.keep_claim or change.to is DeliveryState.SENDING
            c.execute(
                "UPDATE deliveries SET state = ?, updated_at = ?, due_at = ?,"
                " attempts = attempts + ?,"
                " first_attempt_at = CASE WHEN ? THEN COALESCE(first_attempt_at, ?)"
                "   ELSE first_attempt_at END,"
                " last_error = COALESCE(?, last_error),"
                " approved_by = COALESCE(?, approved_by),"
                " hold_origin = CASE WHEN ? = 'held' THEN COALESCE(?, 'policy') ELSE NULL END,"
                " owner = CASE WHEN ? THEN owner ELSE NULL END,"
                " lease_until = CASE WHEN ? THEN lease_until ELSE NULL END"
                " WHERE id = ?",
                (
                    change.to.value,
                    at,
                    codec.micros(change.due_at),
                    int(change.attempt),
                    change.attempt,
                    at,
                    change.error,
                    change.approved_by,
                    change.to.value,
                    change.hold_origin,
                    keep_claim,
                    keep_claim,
                    delivery_id,
                ),
            )
            self._record(c, delivery_id, change.to, change.reason, at, change.decision)
            if change.to is DeliveryState.QUEUED:
                self._reserve(c, delivery_id, at)
            elif change.to is DeliveryState.SENT:
                c.execute("UPDATE history SET sent = 1 WHERE delivery_id = ?", (delivery_id,))
            elif change.to in (DeliveryState.DROPPED, DeliveryState.FAILED):
                c.execute("DELETE FROM history WHERE delivery_id = ?", (delivery_id,))
            return c.execute(f"{codec.DELIVERY_SELECT} WHERE d.id = ?", (delivery_id,)).fetchone()

        return codec.delivery_from_row(await self._write(job))

    # what policies read ----------------------------------------------------------------------
    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        sql = (
            "SELECT delivery_id, recipient_key, campaign, class, content_hash, at, sent"
            " FROM history WHERE recipient_key = ? AND at >= ?"
        )
        args: list[Any] = [recipient_key(recipient), to_micros(since)]
        if campaign is not None:
            sql += " AND campaign = ?"
            args.append(campaign)
        rows = await self._read(lambda c: c.execute(sql + " ORDER BY at", args).fetchall())
        return [
            HistoryEntry(r[0], r[1], r[2], MessageClass(r[3]), r[4], from_micros(r[5]), bool(r[6]))
            for r in rows
        ]

    async def send_times(
        self,
        since: datetime,
        *,
        recipient: str | None = None,
        domain: str | None = None,
        campaign: str | None = None,
        exclude_classes: Sequence[MessageClass] = (),
        limit: int = 100,
    ) -> Sequence[datetime]:
        where = ["at >= ?"]
        args: list[Any] = [to_micros(since)]
        if recipient is not None:
            where.append("recipient_key = ?")
            args.append(recipient_key(recipient))
        if domain is not None:
            where.append("domain = ?")
            args.append(domain.lower())
        if campaign is not None:
            where.append("campaign = ?")
            args.append(campaign)
        if exclude_classes:
            where.append(f"class NOT IN ({','.join('?' * len(exclude_classes))})")
            args.extend(c.value for c in exclude_classes)
        sql = f"SELECT at FROM history WHERE {' AND '.join(where)} ORDER BY at DESC LIMIT ?"
        args.append(limit)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [from_micros(r[0]) for r in rows]

    async def put_fact(self, fact: Fact) -> None:
        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO facts (key, contact, value, observed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key, contact) DO UPDATE SET value = excluded.value,"
                " observed_at = excluded.observed_at"
                " WHERE excluded.observed_at >= facts.observed_at",
                (
                    fact.key,
                    codec.contact_key(fact.contact),
                    fact.value,
                    to_micros(fact.observed_at),
                ),
            )

        await self._write(job)

    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT value, observed_at FROM facts WHERE key = ? AND contact = ?",
                (key, codec.contact_key(contact)),
            ).fetchone()
        )
        return None if row is None else Fact(key, row[0], from_micros(row[1]), contact)

    async def add_event(self, event: Event) -> None:
        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO events (type, recipient_key, message_id, at) VALUES (?, ?, ?, ?)",
                (
                    event.type.value,
                    recipient_key(event.recipient),
                    event.message_id,
                    to_micros(event.at),
                ),
            )

        await self._write(job)

    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT type, recipient_key, at, message_id FROM events"
                " WHERE recipient_key = ? AND at >= ? ORDER BY at",
                (recipient_key(recipient), to_micros(since) if since else 0),
            ).fetchall()
        )
        return [Event(EventType(r[0]), r[1], from_micros(r[2]), r[3]) for r in rows]

    async def get_campaign(self, name: str) -> Campaign | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT approval, paused, updated_at, updated_by FROM campaigns WHERE name = ?",
                (name,),
            ).fetchone()
        )
        if row is None:
            return None
        return Campaign(
            name, Approval(row[0]) if row[0] else None, bool(row[1]), codec.moment(row[2]), row[3]
        )

    async def set_campaign(self, campaign: Campaign) -> None:
        def job(c: sqlite3.Connection) -> None:
            c.execute(
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

    async def count_campaign(self, name: str, since: datetime) -> int:
        row = await self._read(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM deliveries WHERE campaign = ? AND created_at >= ?",
                (name, to_micros(since)),
            ).fetchone()
        )
        count: int = row[0]
        return count

    async def campaigns(self) -> Sequence[CampaignSummary]:
        def job(c: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            counts = c.execute(
                "SELECT campaign, state, COUNT(*) FROM deliveries WHERE campaign IS NOT NULL"
                " GROUP BY campaign, state"
            ).fetchall()
            reviewed = c.execute(
                "SELECT name, approval, paused, updated_at, updated_by FROM campaigns"
            ).fetchall()
            return counts, reviewed

        counts, reviewed = await self._read(job)
        by_name: dict[str, Campaign] = {
            r[0]: Campaign(
                r[0], Approval(r[1]) if r[1] else None, bool(r[2]), codec.moment(r[3]), r[4]
            )
            for r in reviewed
        }
        tallies: dict[str, dict[DeliveryState, int]] = {}
        for name, state, n in counts:
            tallies.setdefault(name, dict.fromkeys(DeliveryState, 0))[DeliveryState(state)] = n
        names = sorted(set(by_name) | set(tallies))
        return [
            CampaignSummary(
                by_name.get(name, Campaign(name)),
                tallies.get(name, dict.fromkeys(DeliveryState, 0)),
            )
            for name in names
        ]

    # audit -----------------------------------------------------------------------------------
    async def add_audit(self, entry: AuditEntry) -> None:
        def job(c: sqlite3.Connection) -> None:
            c.execute(
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
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, at, actor, action, target, note, count FROM audit"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [AuditEntry(from_micros(r[1]), r[2], r[3], r[4], r[5], r[6], r[0]) for r in rows]
