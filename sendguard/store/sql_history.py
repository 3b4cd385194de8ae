"""What was sent, as policies count it (part of `PolicyReads`): the send history
(`history`, `send_times`), deliveries by campaign and by content (`count_campaign`,
`count_content`), and everything a decision reads about one recipient in one statement
(`recipient_reads`: history, events, suppression, time zone and earlier copies of a message
the resend check looks for, also alone: `earlier_copies`). Reads only.

The history is written by intake and the dispatcher (`_reserve` in `sql_intake.py`,
reservations and releases with each change).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import Any

from sendguard.address import recipient_key
from sendguard.clock import from_micros, to_micros
from sendguard.deliveries import HistoryEntry
from sendguard.events import Event, event_type
from sendguard.facts import Fact
from sendguard.message import MessageClass
from sendguard.recipient import SEND_AT, TIMEZONE_FACT, RecipientReads, SendRows, send_kind
from sendguard.resend import Copy, CopyQuery
from sendguard.store import codec
from sendguard.store.sql_jobs import SqlJobs, Tx, _bounded_count, _marks, _one, _where
from sendguard.suppressions import Suppression, SuppressionReason

# Whether a history row counts as sent: its delivery entered `sent` (schema 17's trigger sets
# `history.sent` in that statement), or was gone (pruned when done; a failed or dropped one
# takes its history row with it) or `sent` when the store upgraded to schema 17. No join to
# `deliveries`: a send read is one entry of the covering history_recipient.
_SENT = "h.sent"


_CLASSES = {c.value: c for c in MessageClass}


def _message_class(value: str) -> MessageClass:
    """`MessageClass(value)`, from a table first (a row of history per send is read)."""
    return _CLASSES.get(value) or MessageClass(value)


_AT = attrgetter("at")
_SEND_AT = itemgetter(SEND_AT)
_AT_COPY = attrgetter("accepted_at", "delivery_id")


def _copy(message_id: str, delivery_id: str, created_at: int) -> Copy:
    return Copy(message_id, delivery_id, from_micros(created_at))


def _recipient_reads_sql(history: bool, events: bool, copies: bool = False) -> str:
    """What `recipient_reads` asks in one statement: one tagged row per record (its kind, then
    up to four text columns and a time), the sends, the events and the earlier copies only
    when asked for. A send's kind is below zero and says its message class and whether it
    was made or only reserved (`recipient.send_kind`; NULL for a class this code does not
    know, which fails the read); an event's is 2, a suppression's 3, the time zone fact's 4,
    an earlier copy's 5. Each kind's columns sit where their types match the other kinds'
    (PostgreSQL's UNION wants one type per column). As few columns as the widest kind needs
    (the suppression's reason and source share one, split at the first space: no reason has
    one), and no row repeats the recipient key asked about: Python 3.11's sqlite3 releases
    and takes the GIL around every column it fetches, so each column costs about 1,000
    instructions per row, and a decision reads a row per send. Its arguments: the key and a
    time for each of sends and events, the resend key, the key and a time for copies, then
    the key, `timezone` and the contact key."""
    parts = []
    if history:
        parts.append(
            f"SELECT {_SEND_KIND} AS kind, h.delivery_id AS t1, h.campaign AS t2,"
            " h.content_hash AS t3, h.offer AS t4, h.at AS i1"
            " FROM history h WHERE h.recipient_key = ? AND h.at >= ?"
        )
    if events:
        parts.append(
            "SELECT 2, type, message_id, offer, NULL, at"
            " FROM events WHERE recipient_key = ? AND at >= ?"
        )
    if copies:
        parts.append(_COPIES_SQL.replace("SELECT", "SELECT 5,", 1))
    parts.append(
        "SELECT 3, address, reason || ' ' || source, created_by, note, created_at"
        " FROM suppressions WHERE address_key = ?"
    )
    parts.append(
        "SELECT 4, value, superseded_by, contact, NULL, observed_at"
        " FROM facts WHERE key = ? AND contact = ?"
    )
    return " UNION ALL ".join(parts)


_SEND_KIND = (
    "CASE h.class"
    + "".join(f" WHEN '{c.value}' THEN {_SENT} - {-send_kind(c, False)}" for c in MessageClass)
    + " END"
)
"""A history row's kind (`recipient.send_kind`): its class and `sent` in one integer."""

_COPIES_SQL = (
    "SELECT message_id, id, NULL, NULL, created_at FROM deliveries"
    " WHERE resend_key = ? AND recipient_key = ? AND created_at >= ? AND state <> 'failed'"
)
"""A recipient's deliveries of earlier copies (`earlier_copies`): one probe of
`deliveries_resend` (the condition on `resend_key` lets both databases use the partial index).
A failed one reached nobody: the copy sent again is no double, and is judged as new."""


_RECIPIENT_READS = {
    (history, events, copies): _recipient_reads_sql(history, events, copies)
    for history in (False, True)
    for events in (False, True)
    for copies in (False, True)
}


_BOTH = _RECIPIENT_READS[True, True, False]


def recipient_reads_query(
    key: str,
    history_since: datetime | None,
    events_since: datetime | None,
    copies: CopyQuery | None = None,
    contact: str | None = None,
) -> tuple[str, list[Any]]:
    """The statement of `recipient_reads` about recipient key `key`, and its arguments;
    `contact`: `codec.contact_key(key)`, when the caller has it."""
    if contact is None:
        contact = codec.contact_key(key)
    if copies is None and history_since is not None and events_since is not None:
        # A decision's read with the built-in policies (`fatigue` reads both): its arguments
        # at once. The two spans are mostly one (fatigue's `lookback`): one time to convert.
        since = to_micros(history_since)
        events = since if events_since == history_since else to_micros(events_since)
        return _BOTH, [key, since, key, events, key, TIMEZONE_FACT, contact]
    args: list[Any] = []
    if history_since is not None:
        args += [key, to_micros(history_since)]
    if events_since is not None:
        args += [key, to_micros(events_since)]
    if copies is not None:
        args += [copies.key, key, to_micros(copies.since)]
    args += [key, TIMEZONE_FACT, contact]
    wanted = (history_since is not None, events_since is not None, copies is not None)
    return _RECIPIENT_READS[wanted], args


class SqlHistory(SqlJobs):
    """The send history and the counts policies read."""

    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        sql = (
            "SELECT h.delivery_id, h.recipient_key, h.campaign, h.class, h.content_hash, h.at,"
            f" {_SENT}, h.offer FROM history h WHERE h.recipient_key = ? AND h.at >= ?"
        )
        args: list[Any] = [recipient_key(recipient), to_micros(since)]
        if campaign is not None:
            sql += " AND h.campaign = ?"
            args.append(campaign)

        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(sql + " ORDER BY h.at", args)

        return [self._history_entry(r) for r in await self._read(job)]

    @staticmethod
    def _history_entry(row: Sequence[Any]) -> HistoryEntry:
        """A HistoryEntry from (delivery_id, recipient_key, campaign, class, content_hash, at,
        sent, offer)."""
        return HistoryEntry(
            row[0],
            row[1],
            row[2],
            _message_class(row[3]),
            row[4],
            from_micros(row[5]),
            bool(row[6]),
            row[7],
        )

    async def earlier_copies(self, recipient: str, query: CopyQuery) -> Sequence[Copy]:
        args = [query.key, recipient_key(recipient), to_micros(query.since)]

        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(_COPIES_SQL, args)

        return sorted((_copy(r[0], r[1], r[4]) for r in await self._read(job)), key=_AT_COPY)

    async def recipient_reads(
        self,
        recipient: str,
        *,
        history_since: datetime | None,
        events_since: datetime | None,
        copies: CopyQuery | None = None,
    ) -> RecipientReads:
        key = recipient_key(recipient)
        # The contact key is the recipient key of `key`: `key` itself when the caller gave a
        # key (PolicyContext does), as recipient_key(key) == recipient_key(recipient) then.
        contact = key if key == recipient else None
        sql, args = recipient_reads_query(key, history_since, events_since, copies, contact)

        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(sql, args)

        return self._recipient_rows(key, await self._read(job))

    @staticmethod
    def _recipient_rows(key: str, rows: Sequence[Sequence[Any]]) -> RecipientReads:
        """The RecipientReads of `key` from the tagged rows of `recipient_reads_sql`."""
        sends: list[Sequence[Any]] = []
        events: list[Event] = []
        copies: list[Copy] = []
        suppression = timezone = None
        for row in rows:
            kind = row[0]
            if kind is None:
                raise ValueError(f"a send to {key} of a message class sendguard does not know")
            if kind < 0:
                # A send is kept as its row (`SendRows`, `recipient.SendRow`): no HistoryEntry
                # and no datetime unless one is asked for.
                sends.append(row)
            elif kind == 2:
                at = from_micros(row[5])
                events.append(Event(event_type(row[1]), key, at, row[2], row[3]))
            elif kind == 3:
                reason, source = row[2].split(" ", 1)
                suppression = Suppression(
                    row[1], SuppressionReason(reason), source, from_micros(row[5]), row[3], row[4]
                )
            elif kind == 4:
                timezone = Fact(TIMEZONE_FACT, row[1], from_micros(row[5]), row[3] or None, row[2])
            else:
                copies.append(_copy(row[1], row[2], row[5]))
        # Oldest first. The statement leaves the order to this sort of a few rows: an ORDER BY
        # over the UNION costs the database a temporary B-tree per statement, far more.
        if len(sends) > 1:
            sends.sort(key=_SEND_AT)
        if len(events) > 1:
            events.sort(key=_AT)
        if len(copies) > 1:
            copies.sort(key=_AT_COPY)
        return RecipientReads(SendRows(key, sends), events, suppression, timezone, tuple(copies))

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
        for clause, value in (
            ("recipient_key = ?", recipient_key(recipient) if recipient else None),
            ("domain = ?", domain.lower() if domain else None),
            ("campaign = ?", campaign),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if exclude_classes:
            where.append(f"class NOT IN ({_marks(len(exclude_classes))})")
            args.extend(c.value for c in exclude_classes)
        sql = f"SELECT at FROM history WHERE {' AND '.join(where)} ORDER BY at DESC LIMIT ?"

        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(sql, [*args, limit])

        return [from_micros(r[0]) for r in await self._read(job)]

    async def count_campaign(
        self, name: str, since: datetime, *, at_most: int | None = None
    ) -> int:
        sql, args = _bounded_count(
            "SELECT 1 FROM deliveries WHERE campaign = ? AND created_at >= ?",
            [name, to_micros(since)],
            at_most,
        )

        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, sql, args)

        row = await self._read(job)
        return int(row[0]) if row else 0

    async def count_content(
        self,
        content_hash: str,
        *,
        since: datetime | None = None,
        campaign: str | None = None,
        before: str | None = None,
        exclude_message: str | None = None,
        at_most: int | None = None,
    ) -> int:
        where, args = _where(
            ("m.content_hash = ?", content_hash),
            ("d.created_at >= ?", codec.micros(since)),
            ("d.campaign = ?", campaign),
            ("d.id < ?", before),
            ("d.message_id <> ?", exclude_message),
        )
        sql, args = _bounded_count(
            "SELECT 1 FROM deliveries d JOIN messages m ON m.id = d.message_id" + where,
            args,
            at_most,
        )

        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, sql, args)

        row = await self._read(job)
        return int(row[0]) if row else 0
