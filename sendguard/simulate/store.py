"""The replay's scratch store: SQLite for everything, and in memory what policies read most.

Every decision reads the recipient's send history, their events, whether they are suppressed
and the campaign's review state: four SQL reads per delivery, of what the replay itself wrote
a moment before. A replay is one process writing through this store alone, so it keeps a copy
of those records as it writes them and answers those reads from it, exactly as the SQL would:
- history: each reservation (a delivery entering `queued`, at that time, once per delivery),
  gone when the delivery is dropped or failed; `sent` is read from the delivery's state at the
  time of the read, as the SQL's `history.sent` (schema 17's trigger) says it;
- events: each one added, oldest first (ties in the order added, as the SQL's index gives);
- suppressions and campaigns: a replay writes none, so none exists.
It keeps no timelines: a replay reads where each delivery ended, never the transitions and
policy outcomes that led there, so they are not written (what a decision waits on still is:
`wake_waiting` reads it); reading a timeline from this store raises.
It holds back what intake commits (and the events added) and writes the rows of up to `batch`
messages at once, one statement per kind of row (`executemany`), before anything else uses the
database (`ScratchDatabase.defer`): SQLite sees every row before any read, as before. A
delivery sent while held back (`send_queued`) is written as sent, in one row, not written
queued and updated. Reads that held-back rows cannot change pass them: the next due time (the
earliest of SQL's and of the held rows) and facts (none is held back; they are kept in memory).
Whatever this copy does not follow (a prune, a reviewer's edit, a suppression or campaign
written) makes the store forget the copy and read SQL again from then on; so does opening a
database that already holds records. `tests/unit/test_simulate_store.py` checks every answer
from memory against the SQL's, on replays of generated histories.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left, insort_right
from collections.abc import Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sendguard.address import recipient_key
from sendguard.approvals import Campaign
from sendguard.clock import from_micros, to_micros
from sendguard.deliveries import (
    Change,
    DeliveryRecord,
    HistoryEntry,
    IdempotencyRecord,
    IntakeClaim,
    NewDelivery,
    NewMessage,
    RecordedOutcome,
)
from sendguard.errors import Conflict
from sendguard.esp_request import EspRequest
from sendguard.events import Event, event_type
from sendguard.facts import Fact
from sendguard.message import Delivery, DeliveryState, Message, MessageClass, Transition
from sendguard.pruning import PruneCutoffs
from sendguard.recipient import TIMEZONE_FACT, RecipientReads, SendRows, send_kind
from sendguard.reports import ShadowTally
from sendguard.resend import CopyQuery
from sendguard.review_queue import Edit, HeldQuery, HeldQueue
from sendguard.store import codec
from sendguard.store.sql_store import (
    DELIVERY_INSERT_COLUMNS,
    DUE_STATES,
    MESSAGE_INSERT,
    REQUIREMENT_INSERT,
    Job,
    SqlStore,
    Tx,
    delivery_values,
    message_values,
    premise_keys,
)
from sendguard.store.sqlite import SQLiteStore, settle
from sendguard.store.sqlite_scratch import ScratchDatabase
from sendguard.suppressions import Suppression
from sendguard.verdict import Decision

_EPOCH = from_micros(0)


_SEND_QUEUED = (
    "UPDATE deliveries SET state = 'sent', updated_at = ?, due_at = NULL,"
    " attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?),"
    " hold_origin = NULL, owner = NULL, lease_until = NULL"
    " WHERE state = 'queued' AND id IN ({marks})"
)


def _no_timelines() -> NotImplementedError:
    return NotImplementedError("a replay's scratch store keeps no timelines")


_RELEASED = frozenset({DeliveryState.DROPPED, DeliveryState.FAILED})
_SENT = DeliveryState.SENT.value
# Deliveries per history statement, as `add_message` writes them (far below SQLite's bound).
_IDS_PER_RESERVE = 500
_DUE = frozenset(s.value for s in DUE_STATES)

T = TypeVar("T")

# A held-back delivery's row: the columns intake writes, then the two a send sets.
_HELD_COLUMNS = (*DELIVERY_INSERT_COLUMNS, "attempts", "first_attempt_at")
_INSERT_DELIVERY = (  # constant column names and placeholders only
    f"INSERT INTO deliveries ({', '.join(_HELD_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(_HELD_COLUMNS))})"
)
_STATE, _UPDATED_AT, _DUE_AT, _HOLD_ORIGIN, _ATTEMPTS, _FIRST_ATTEMPT_AT = (
    _HELD_COLUMNS.index(name)
    for name in ("state", "updated_at", "due_at", "hold_origin", "attempts", "first_attempt_at")
)


class _Unlocked:
    """A lock nobody else takes."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_UNLOCKED = _Unlocked()


class _Statements:
    """A transaction that keeps the statements it is given, to be run later in one go."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Sequence[Any]]] = {}  # by statement, in the order first given

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        self.rows.setdefault(sql, []).append(args)
        return 1

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise RuntimeError("a held-back write cannot read")


def _settled(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a store job run against `_Statements`, which never suspends."""
    return settle(coroutine, "a held-back write may await only its transaction")


class _Held:
    """The rows of the messages (and events) committed since the last write to SQLite."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []
        self.requirements: list[tuple[str, str]] = []
        self.deliveries: dict[str, list[Any]] = {}  # by id, the values of _HELD_COLUMNS
        self.due: dict[str, int] = {}  # by delivery id: due_at of those in a due state
        self.later = _Statements()  # what the store's own SQL writes after them
        self.count = 0  # messages

    def write(self, conn: sqlite3.Connection) -> int:
        """Write every row, each table's in one statement, in an order that keeps every
        reference valid (messages, deliveries, then what refers to them)."""
        conn.executemany(MESSAGE_INSERT, self.messages)
        conn.executemany(REQUIREMENT_INSERT, self.requirements)
        conn.executemany(_INSERT_DELIVERY, self.deliveries.values())
        for sql, rows in self.later.rows.items():
            conn.executemany(sql, rows)
        # A delivery sent while held back is inserted `sent`: no UPDATE runs schema 17's
        # trigger, so its history row (written above, reserved) is marked here, as it would be.
        sent = [(d,) for d, row in self.deliveries.items() if row[_STATE] == _SENT]
        if sent:
            conn.executemany("UPDATE history SET sent = 1 WHERE delivery_id = ?", sent)
        return max(self.count, 1)


@dataclass(frozen=True)
class _Reserved:
    """One row of the history table, as `_reserve` writes it."""

    delivery_id: str
    recipient: str  # the recipient key
    campaign: str | None
    message_class: MessageClass
    content_hash: str | None
    at: datetime  # as read back: UTC, to the microsecond
    offer: str | None
    micros: int  # `at` as stored (a decision's reads count on it: `SendRows`)


def _stored(at: datetime) -> datetime:
    """A time as the store reads it back."""
    return from_micros(to_micros(at))


class ReplayStore(SQLiteStore):
    """A scratch SQLite store (`scratch=True`) that answers policies' hot reads from memory."""

    def __init__(self, path: Path, *, batch: int = 1000) -> None:
        """`batch`: the most messages held back before their rows are written (0: none)."""
        super().__init__(path, scratch=True)
        assert isinstance(self._db, ScratchDatabase)
        self._scratch: ScratchDatabase = self._db
        self._batch = batch
        self._held: _Held | None = None
        self._holding = False  # `_write` keeps the job's statements in `_held.later`
        self._stored_due: tuple[int, datetime | None] | None = None  # (at writes, SQL's answer)
        self._kept = True
        """False once something the copy does not follow happened: read SQL."""
        self._history: dict[str, list[_Reserved]] = {}  # by recipient key, oldest first
        self._reservation: dict[str, _Reserved] = {}  # by delivery id
        self._sent: set[str] = set()  # delivery ids in state `sent`
        self._events: dict[str, list[Event]] = {}  # by recipient key, oldest first
        # By key and contact key: when observed (as stored) and the fact as read back.
        self._facts: dict[tuple[str, str], tuple[int, Fact]] = {}
        self.memory_reads = 0
        """Reads answered from memory (for tests)."""

    @property
    def kept(self) -> bool:
        """Whether reads are still answered from memory."""
        return self._kept

    def _forget(self) -> None:
        self._kept = False
        self._history, self._reservation, self._events, self._facts = {}, {}, {}, {}
        self._sent = set()

    async def open(self) -> None:
        await super().open()

        def job(conn: sqlite3.Connection) -> bool:
            return any(
                conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]  # noqa: S608
                for table in ("deliveries", "history", "events", "suppressions", "campaigns")
            )

        if await self._db.read(job):  # not a fresh database: the copy would miss its records
            self._forget()

    def lock_recipients(
        self, recipients: Sequence[str], *, campaign: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        # A replay is one caller that finishes each message and each due delivery before it
        # starts the next: there is nobody to exclude.
        del recipients, campaign
        return _UNLOCKED

    # writes held back -------------------------------------------------------------------------
    def _may_hold(self) -> bool:
        # Not once the memory copy is gone (something it does not follow happened), nor with
        # outbound webhooks (their events are written with the rows, in the server's way).
        return self._kept and self._batch > 0 and not self._webhook_targets

    def _held_back(self) -> _Held:
        held = self._held
        if held is None:
            held = self._held = _Held()
            self._scratch.defer(self._write_held)
        return held

    def _write_held(self, conn: sqlite3.Connection) -> int:
        held, self._held = self._held, None
        return 0 if held is None else held.write(conn)

    async def _write(self, job: Job[T]) -> T:
        if self._holding:  # a write `add_event` holds back: its statements, for later
            return _settled(job(self._held_back().later))  # type: ignore[arg-type]
        return await super()._write(job)

    def _hold_message(
        self, message: Message, content: bytes, deliveries: Sequence[NewDelivery]
    ) -> None:
        """Hold back the rows `add_message` would write: the same rows (the store's own
        row builders and SQL), written with the next batch."""
        now = to_micros(message.received_at)
        held = self._held_back()
        held.messages.append(message_values(message, content, now))
        held.requirements.extend((message.id, key) for key in premise_keys(message))
        for new in deliveries:
            row = [*delivery_values(message, new, now), 0, None]
            held.deliveries[new.id] = row
            if row[_STATE] in _DUE and row[_DUE_AT] is not None:
                held.due[new.id] = row[_DUE_AT]
        for new in deliveries:
            _settled(
                SqlStore._record_decision(
                    held.later, new.id, new.state, now, new.decision, fresh=True
                )
            )
        queued = [new.id for new in deliveries if new.state is DeliveryState.QUEUED]
        for start in range(0, len(queued), _IDS_PER_RESERVE):
            _settled(SqlStore._reserve(held.later, queued[start : start + _IDS_PER_RESERVE], now))
        # As `add_message` keeps them: the message, and the content of what is sent next.
        self._cache.keep_message(message)
        if queued:
            self._cache.keep_content(message.id, content)
        held.count += 1
        if held.count >= self._batch:
            self._scratch.settle()

    # writes the copy follows -------------------------------------------------------------
    def _keep_reserved(
        self, delivery_id: str, recipient: str, message: Message, at: datetime
    ) -> None:
        if delivery_id in self._reservation:  # ON CONFLICT (delivery_id) DO NOTHING
            return
        fields = message.fields
        stored = to_micros(at)
        row = _Reserved(
            delivery_id,
            recipient_key(recipient),
            fields.campaign,
            fields.message_class,
            message.content_hash,
            from_micros(stored),  # _stored(at)
            fields.offer,
            stored,
        )
        self._reservation[delivery_id] = row
        insort_right(self._history.setdefault(row.recipient, []), row, key=lambda r: r.at)

    def _forget_reserved(self, delivery_id: str) -> None:
        row = self._reservation.pop(delivery_id, None)
        if row is not None:
            self._history[row.recipient].remove(row)

    async def add_message(
        self,
        message: Message,
        content: bytes,
        deliveries: Sequence[NewDelivery],
        idempotency: IdempotencyRecord | None = None,
        esp_request: EspRequest | None = None,
        *,
        claim: IntakeClaim | None = None,
    ) -> None:
        if claim is not None:  # a replay has no dispatcher to hand deliveries to
            raise ValueError("a replay store takes no claim at intake")
        if idempotency is None and esp_request is None and self._may_hold():
            self._hold_message(message, content, deliveries)
        else:
            await super().add_message(message, content, deliveries, idempotency, esp_request)
        if not self._kept:
            return
        for new in deliveries:
            if new.state is DeliveryState.QUEUED:
                self._keep_reserved(new.id, new.recipient, message, message.received_at)
            elif new.state is DeliveryState.SENT:
                self._sent.add(new.id)

    async def finish(self, delivery_id: str, change: Change) -> None:
        await self.change(delivery_id, change)  # what `change` keeps track of, below

    async def add_messages(
        self,
        messages: Sequence[NewMessage],
        idempotency: IdempotencyRecord | None = None,
        *,
        claim: IntakeClaim | None = None,
    ) -> None:
        # A replay judges stored messages one at a time (`add_message`); an ESP request of
        # several messages never reaches it.
        if len(messages) != 1:
            raise ValueError("a replay store takes one message at a time")
        item = messages[0]
        await self.add_message(
            item.message, item.content, item.deliveries, idempotency, item.esp_request, claim=claim
        )

    async def change(self, delivery_id: str, change: Change) -> Delivery:
        delivery = await super().change(delivery_id, change)
        if not self._kept:
            return delivery
        if change.to is DeliveryState.SENT:
            self._sent.add(delivery_id)
        else:
            self._sent.discard(delivery_id)
        if change.to is DeliveryState.QUEUED:
            self._keep_reserved(delivery_id, delivery.recipient, delivery.message, change.at)
        elif change.to in _RELEASED:
            self._forget_reserved(delivery_id)
        return delivery

    async def send_queued(self, delivery_ids: Sequence[str], at: datetime) -> None:
        """Each of these queued deliveries is sent at `at`: what `change` to `sent` with
        `expect={queued}, attempt=True` does to each (no timeline is kept, so that is its row
        and the copy's `sent`), in one statement, without reading the deliveries back. Raise
        Conflict, changing none, if one of them is not queued."""
        if not delivery_ids:
            return
        micros = to_micros(at)
        held = self._held
        if held is not None and all(d in held.deliveries for d in delivery_ids):
            # Held back: their rows are written as sent (as `_SEND_QUEUED` leaves them).
            rows = {d: held.deliveries[d] for d in delivery_ids}
            if any(row[_STATE] != DeliveryState.QUEUED.value for row in rows.values()):
                raise Conflict(f"not every one of {', '.join(delivery_ids)} is queued")
            for delivery_id, row in rows.items():
                row[_STATE] = DeliveryState.SENT.value
                row[_UPDATED_AT] = micros
                row[_DUE_AT] = None
                row[_ATTEMPTS] += 1
                if row[_FIRST_ATTEMPT_AT] is None:
                    row[_FIRST_ATTEMPT_AT] = micros
                row[_HOLD_ORIGIN] = None
                held.due.pop(delivery_id, None)
            if self._kept:
                self._sent.update(delivery_ids)
            return
        marks = ",".join("?" * len(delivery_ids))  # placeholders only
        sql = _SEND_QUEUED.format(marks=marks)

        def guarded(conn: sqlite3.Connection) -> int:
            changed: int = conn.execute(sql, (micros, micros, *delivery_ids)).rowcount
            if changed != len(set(delivery_ids)):
                raise Conflict(f"not every one of {', '.join(delivery_ids)} is queued")
            return changed

        await self._db.write(guarded)
        if self._kept:
            self._sent.update(delivery_ids)

    async def add_event(self, event: Event) -> None:
        self._holding = self._may_hold()
        try:
            await super().add_event(event)
        finally:
            self._holding = False
        if not self._kept:
            return
        key = recipient_key(event.recipient)
        stored = Event(
            event_type(str(event.type)), key, _stored(event.at), event.message_id, event.offer
        )
        insort_right(self._events.setdefault(key, []), stored, key=lambda e: e.at)

    @staticmethod
    async def _record(
        tx: Tx,
        delivery_id: str,
        state: DeliveryState,
        reason: str,
        at: int,
        decision: Decision | None,
        *,
        fresh: bool = False,
    ) -> None:
        """No transition, no outcome row (see the module docstring); the waits, as written."""
        del reason, at
        if decision is not None:
            await SqlStore._record_waits(tx, delivery_id, state, decision, fresh=fresh)

    async def transitions(self, delivery_id: str) -> Sequence[Transition]:
        raise _no_timelines()

    async def outcomes(self, delivery_id: str) -> Sequence[RecordedOutcome]:
        raise _no_timelines()

    async def delivery_records(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryRecord]:
        raise _no_timelines()

    async def shadow_tallies(
        self, since: datetime, *, examples: int = 5, top: int = 10
    ) -> Sequence[ShadowTally]:
        raise _no_timelines()

    async def held_queue(self, query: HeldQuery) -> HeldQueue:
        raise _no_timelines()

    # writes the copy does not follow: SQL from then on ----------------------------------------
    async def prune(self, before: datetime | PruneCutoffs) -> int:
        self._forget()
        return await super().prune(before)

    async def add_edit(self, edit: Edit, message: Message, content: bytes) -> Edit:
        self._forget()
        return await super().add_edit(edit, message, content)

    async def add_suppressions(
        self, suppressions: Sequence[Suppression], at: datetime
    ) -> Sequence[bool]:
        self._forget()
        return await super().add_suppressions(suppressions, at)

    async def set_campaign(self, campaign: Campaign) -> None:
        self._forget()
        await super().set_campaign(campaign)

    async def put_fact(self, fact: Fact) -> None:
        await super().put_fact(fact)
        if not self._kept:
            return
        # As the SQL keeps it: the latest observation of a key for a contact (a tie replaces).
        contact = codec.contact_key(fact.contact)
        observed = to_micros(fact.observed_at)
        kept = self._facts.get((fact.key, contact))
        if kept is None or observed >= kept[0]:
            read = Fact(
                fact.key, fact.value, from_micros(observed), contact or None, fact.superseded_by
            )
            self._facts[fact.key, contact] = (observed, read)

    # reads ------------------------------------------------------------------------------------
    @staticmethod
    def _since(rows: Sequence[_Reserved], since: datetime) -> int:
        return bisect_left(rows, _stored(since), key=lambda r: r.at)

    async def next_due_at(self) -> datetime | None:
        # Held-back rows are not in SQLite yet, and change no row that is: the earliest due
        # time is the earlier of SQL's and theirs. SQL's changes only with a write.
        writes = self._scratch.writes
        if self._stored_due is None or self._stored_due[0] != writes:
            with self._scratch.past_deferred():
                self._stored_due = (writes, await super().next_due_at())
        stored = self._stored_due[1]
        held = self._held
        if held is None or not held.due:
            return stored
        first = from_micros(min(held.due.values()))
        return first if stored is None or first < stored else stored

    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        if not self._kept:
            return await super().get_fact(key, contact)
        self.memory_reads += 1
        kept = self._facts.get((key, codec.contact_key(contact)))
        return None if kept is None else kept[1]

    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        if not self._kept:
            return await super().history(recipient, since, campaign=campaign)
        return self._kept_history(recipient_key(recipient), since, campaign)

    def _kept_history(
        self, key: str, since: datetime, campaign: str | None = None
    ) -> list[HistoryEntry]:
        self.memory_reads += 1
        rows = self._history.get(key, [])
        sent = self._sent
        return [
            HistoryEntry(
                r.delivery_id,
                r.recipient,
                r.campaign,
                r.message_class,
                r.content_hash,
                r.at,
                r.delivery_id in sent,
                r.offer,
            )
            for r in rows[self._since(rows, since) :]
            if campaign is None or r.campaign == campaign
        ]

    def _kept_sends(self, key: str, since: datetime) -> SendRows:
        """`_kept_history` as the SQL's recipient read gives it: rows, not entries."""
        self.memory_reads += 1
        rows = self._history.get(key, [])
        sent = self._sent
        return SendRows(
            key,
            [
                (
                    send_kind(r.message_class, r.delivery_id in sent),
                    r.delivery_id,
                    r.campaign,
                    r.content_hash,
                    r.offer,
                    r.micros,
                )
                for r in rows[self._since(rows, since) :]
            ],
        )

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
        if not self._kept or recipient is None or domain is not None:
            return await super().send_times(
                since,
                recipient=recipient,
                domain=domain,
                campaign=campaign,
                exclude_classes=exclude_classes,
                limit=limit,
            )
        self.memory_reads += 1
        rows = self._history.get(recipient_key(recipient), [])
        times: list[datetime] = []
        start = self._since(rows, since)
        for r in reversed(rows[start:]):  # newest first
            if 0 <= limit <= len(times):  # SQLite reads a negative LIMIT as none
                break
            if (campaign is None or r.campaign == campaign) and (
                r.message_class not in exclude_classes
            ):
                times.append(r.at)
        return times

    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        if not self._kept:
            return await super().events(recipient, since)
        return self._kept_events(recipient_key(recipient), since)

    def _kept_events(self, key: str, since: datetime | None) -> list[Event]:
        self.memory_reads += 1
        rows = self._events.get(key, [])
        start = bisect_left(rows, _stored(since) if since else _EPOCH, key=lambda e: e.at)
        return rows[start:]

    async def recipient_reads(
        self,
        recipient: str,
        *,
        history_since: datetime | None,
        events_since: datetime | None,
        copies: CopyQuery | None = None,
    ) -> RecipientReads:
        # Earlier copies are not followed in memory (a replay's intake looks for none): the SQL
        # answers, which sees every held-back row.
        if not self._kept or copies is not None:
            return await super().recipient_reads(
                recipient, history_since=history_since, events_since=events_since, copies=copies
            )
        # What `history`, `events`, `get_suppression` and `get_fact` answer, from memory.
        key = recipient_key(recipient)
        self.memory_reads += 2  # no suppression; the time zone fact
        zone = self._facts.get((TIMEZONE_FACT, codec.contact_key(key)))
        return RecipientReads(
            () if history_since is None else self._kept_sends(key, history_since),
            () if events_since is None else self._kept_events(key, events_since),
            None,
            None if zone is None else zone[1],
        )

    async def get_suppression(self, address: str) -> Suppression | None:
        if not self._kept:
            return await super().get_suppression(address)
        self.memory_reads += 1
        return None

    async def get_campaign(self, name: str) -> Campaign | None:
        if not self._kept:
            return await super().get_campaign(name)
        self.memory_reads += 1
        return None
