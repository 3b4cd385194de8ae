"""Intake and decisions (`IntakeWrites`): a message with its deliveries and their
decisions committed at once, idempotency keys, the message reads; and how a decision is
recorded (its transition, its notable outcomes, the fact keys it waits on) and a send reserved
in the recipient's history, which the dispatcher's state changes use too.

Transactions that span two concerns: `add_message` writes the outbox rows of its new
deliveries (`_emit`, `sql_outbox.py`) in its own transaction, so a webhook event exists exactly
when its delivery does. `_record`, `_record_decision` and `_reserve` write inside the caller's
transaction: the dispatcher's `change` and `wake_waiting` (`sql_dispatch.py`) call them, so a
state change commits with its decision and its send reservation (base.py's rules).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sendguard.address import domain_of, recipient_key
from sendguard.clock import to_micros
from sendguard.deliveries import (
    IdempotencyRecord,
    IntakeClaim,
    NewDelivery,
    NewMessage,
    sends_now,
)
from sendguard.errors import Conflict
from sendguard.esp_request import EspRequest
from sendguard.lifecycle import lifecycle_event
from sendguard.message import DeliveryState, Message
from sendguard.offload import LARGE
from sendguard.store import codec, sql_content
from sendguard.store.sql_jobs import Tx, _marks, _one, _Writes
from sendguard.store.sql_outbox import SqlOutbox
from sendguard.verdict import FORWARD, SHADOW, Action, Decision, Mode

# Rows per multi-row INSERT: 11 values each, far below the bound parameters either allows.
_ROWS_PER_INSERT = 500


MESSAGE_INSERT = (
    "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
    " campaign, class, size, content_hash, content, offer, smtputf8, body_8bit, chunks,"
    " links) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""A message's row, with `message_values` (`add_message`)."""


def message_values(message: Message, content: bytes, now: int, chunks: int = 0) -> tuple[Any, ...]:
    """The values of MESSAGE_INSERT for `message`, received at `now` (microseconds); with
    `chunks`, its content is in that many pieces (sql_content.py) and `content` is empty."""
    fields = message.fields
    return (
        message.id,
        now,
        message.ingress,
        message.mail_from,
        codec.dump_json(message.recipients),
        codec.dump_headers(message.headers),
        codec.dump_fields(fields),
        fields.campaign,
        fields.message_class.value,
        message.size,
        message.content_hash,
        content,
        fields.offer,
        int(message.smtputf8),
        int(message.body_8bit),
        chunks,
        message.links,
    )


REQUIREMENT_INSERT = "INSERT INTO requirements (message_id, key) VALUES (?, ?)"
"""One fact key a message's premises name (`premise_keys`), so the fact wakes it."""


def premise_keys(message: Message) -> list[str]:
    """The fact keys `message`'s premises name, each once, sorted."""
    fields = message.fields
    return sorted({r.key for r in (*fields.requires, *fields.unless)})


DELIVERY_INSERT_COLUMNS = (
    "id",
    "message_id",
    "recipient",
    "recipient_key",
    "domain",
    "campaign",
    "state",
    "created_at",
    "updated_at",
    "due_at",
    "hold_origin",
    "first_state",
    "first_reason",
    "first_outcomes",
    "resend_key",
)
"""The columns a new delivery's row is written with (`delivery_values`); the rest take
their defaults."""
_DELIVERY_INSERT = f"INSERT INTO deliveries ({', '.join(DELIVERY_INSERT_COLUMNS)}) VALUES "
_DELIVERY_MARKS = f"({', '.join('?' * len(DELIVERY_INSERT_COLUMNS))})"
# A delivery claimed as it is committed (`add_message`'s `claim`): as `claim_due` leaves one.
_CLAIMED_COLUMNS = (
    *DELIVERY_INSERT_COLUMNS,
    "owner",
    "lease_until",
    "attempts",
    "first_attempt_at",
)
_CLAIMED_INSERT = f"INSERT INTO deliveries ({', '.join(_CLAIMED_COLUMNS)}) VALUES "
_CLAIMED_MARKS = f"({', '.join('?' * len(_CLAIMED_COLUMNS))})"
_STATE = DELIVERY_INSERT_COLUMNS.index("state")


def delivery_values(message: Message, new: NewDelivery, now: int) -> tuple[Any, ...]:
    """The values of DELIVERY_INSERT_COLUMNS for `new`, a delivery of `message` decided at
    intake at `now` (microseconds); its first transition is kept on the row."""
    state = new.state.value
    return (
        new.id,
        message.id,
        new.recipient,
        recipient_key(new.recipient),
        domain_of(new.recipient),
        message.fields.campaign,
        state,
        now,
        now,
        codec.micros(new.due_at),
        new.hold_origin if new.state is DeliveryState.HELD else None,
        state,
        new.reason,
        codec.dump_outcomes(new.decision.outcomes),
        new.resend_key,
    )


class SqlIntake(SqlOutbox):
    """Messages and their deliveries as intake commits them, and decisions as recorded."""

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
        item = NewMessage(message, content, deliveries, esp_request)
        await self._add_messages([item], idempotency, claim)

    async def add_messages(
        self,
        messages: Sequence[NewMessage],
        idempotency: IdempotencyRecord | None = None,
        *,
        claim: IntakeClaim | None = None,
    ) -> None:
        await self._add_messages(messages, idempotency, claim)

    async def _add_messages(
        self,
        messages: Sequence[NewMessage],
        idempotency: IdempotencyRecord | None,
        claim: IntakeClaim | None,
    ) -> None:
        """`add_messages`, which `add_message` is for one (a subclass overriding either keeps
        the other)."""
        # Large contents go first, in pieces, each committed on its own (sql_content.py).
        pieces: list[tuple[int, int]] = []
        for item in messages:
            message, content, esp_request = item.message, item.content, item.esp_request
            now = to_micros(message.received_at)
            chunks = esp_chunks = 0
            if sql_content.chunked(content):
                chunks = await sql_content.write_chunks(self._write_one, message.id, content, now)
            if esp_request is not None and sql_content.chunked(esp_request.body):
                esp_chunks = await sql_content.write_chunks(
                    self._write_one, message.id, esp_request.body, now, sql_content.ESP_BODY
                )
            pieces.append((chunks, esp_chunks))

        async def job(tx: Tx) -> None:
            if idempotency is not None:
                changed = await tx.execute(
                    "INSERT INTO idempotency (key, message_id, response, created_at, fingerprint)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                    " message_id = excluded.message_id, response = excluded.response,"
                    " created_at = excluded.created_at, fingerprint = excluded.fingerprint"
                    " WHERE idempotency.created_at < ?",
                    (
                        idempotency.key,
                        idempotency.message_id,
                        idempotency.response,
                        to_micros(messages[-1].message.received_at),
                        idempotency.fingerprint,
                        codec.micros(idempotency.reusable_before) or 0,
                    ),
                )
                if changed == 0:
                    raise Conflict(f"idempotency key {idempotency.key!r} was used before")
            # The rest reads nothing and none reads what another writes: run together.
            writes = _Writes()
            for item, (chunks, esp_chunks) in zip(messages, pieces, strict=True):
                await self._message_writes(writes, item, chunks, esp_chunks, claim)
            await self._run_all(tx, writes.statements)

        # Kept before the commit: a claim may take its deliveries in the very batch that
        # commits them, before this coroutine runs again. Forgotten if the commit fails.
        for item in messages:
            self._cache.keep_message(item.message)
            if any(new.state is DeliveryState.QUEUED for new in item.deliveries):
                # The dispatcher sends it next.
                self._cache.keep_content(item.message.id, item.content)
        try:
            # Without an idempotency key to check first, the writes are one statement
            # where the backend can send them as one.
            await (self._write_one if idempotency is None else self._write)(job)
        except BaseException as exc:
            for item, (chunks, esp_chunks) in zip(messages, pieces, strict=True):
                self._cache.forget(item.message.id)
                if (chunks or esp_chunks) and isinstance(exc, Conflict):
                    # Its rows were not written; else left to the prune; the refusal is what
                    # the caller hears either way.
                    with contextlib.suppress(Exception):
                        await sql_content.drop_chunks(self._write_one, item.message.id)
            raise

    async def _message_writes(
        self,
        writes: _Writes,
        item: NewMessage,
        chunks: int,
        esp_chunks: int,
        claim: IntakeClaim | None,
    ) -> None:
        """The rows of one message of `add_messages`, with its deliveries and decisions."""
        message, content, deliveries = item.message, item.content, item.deliveries
        esp_request = item.esp_request
        now = to_micros(message.received_at)
        claimed = (
            []
            if claim is None
            else [new for new in deliveries if sends_now(new, message.received_at)]
        )
        row = message_values(message, b"" if chunks else content, now, chunks)
        await writes.execute(MESSAGE_INSERT, row)
        if esp_request is not None:
            await writes.execute(
                "INSERT INTO esp_requests (message_id, esp, template, body, chunks)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    message.id,
                    esp_request.esp,
                    esp_request.template,
                    b"" if esp_chunks else esp_request.body,
                    esp_chunks,
                ),
            )
        for key in premise_keys(message):
            await writes.execute(REQUIREMENT_INSERT, (message.id, key))
        # Each table's rows of the message in one statement (per chunk of rows).
        taken = {new.id for new in claimed}
        unclaimed = [new for new in deliveries if new.id not in taken]
        for start in range(0, len(unclaimed), _ROWS_PER_INSERT):
            chunk = unclaimed[start : start + _ROWS_PER_INSERT]
            # The first transition is kept on the row (no transitions row).
            await writes.execute(
                _DELIVERY_INSERT + ", ".join([_DELIVERY_MARKS] * len(chunk)),
                [value for new in chunk for value in delivery_values(message, new, now)],
            )
        if claim is not None and claimed:
            await self._insert_claimed(writes, message, claimed, claim, now)
        for new in deliveries:
            await self._record_decision(writes, new.id, new.state, now, new.decision, fresh=True)
            if self._webhook_targets:
                await self._emit(
                    writes,
                    new.id,
                    lifecycle_event(None, new.state),
                    new.reason,
                    now,
                    (message.id, new.recipient, message.fields.campaign),
                )
        # The send history from what is at hand (not from the rows written beside it).
        queued = [new for new in deliveries if new.state is DeliveryState.QUEUED]
        fields = message.fields
        for start in range(0, len(queued), _ROWS_PER_INSERT):
            chunk = queued[start : start + _ROWS_PER_INSERT]
            await writes.execute(
                "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class,"
                " content_hash, at, offer) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                + " ON CONFLICT (delivery_id) DO NOTHING",
                [
                    value
                    for new in chunk
                    for value in (
                        new.id,
                        recipient_key(new.recipient),
                        domain_of(new.recipient),
                        fields.campaign,
                        fields.message_class.value,
                        message.content_hash,
                        now,
                        fields.offer,
                    )
                ],
            )

    @staticmethod
    async def _insert_claimed(
        writes: _Writes,
        message: Message,
        claimed: Sequence[NewDelivery],
        claim: IntakeClaim,
        now: int,
    ) -> None:
        """The rows of deliveries claimed as they are committed, `sending` (attempt 1) under
        `claim`'s lease, and their `attempt 1` transitions (the first, the decision's
        `queued`, on the row as for every new delivery)."""
        until = to_micros(claim.lease_until)
        for start in range(0, len(claimed), _ROWS_PER_INSERT):
            chunk = claimed[start : start + _ROWS_PER_INSERT]
            values: list[Any] = []
            for new in chunk:
                row = list(delivery_values(message, new, now))
                row[_STATE] = DeliveryState.SENDING.value
                values.extend((*row, claim.owner, until, 1, now))
            await writes.execute(_CLAIMED_INSERT + ", ".join([_CLAIMED_MARKS] * len(chunk)), values)
            # seq 2: after the first transition on the row, as _NEXT_SEQ gives a new delivery.
            await writes.execute(
                "INSERT INTO transitions (delivery_id, seq, at, state, reason) VALUES "
                + ", ".join(["(?, 2, ?, 'sending', 'attempt 1')"] * len(chunk)),
                [value for new in chunk for value in (new.id, now)],
            )

    @staticmethod
    async def _record(
        tx: Tx,
        delivery_id: str,
        state: DeliveryState,
        reason: str,
        at: int,
        decision: Decision | None,
    ) -> None:
        """Append a transitions row with the decision's outcomes (a delivery's first and
        final transitions are kept on its row instead: `add_message`, `change`)."""
        kept = codec.dump_outcomes(decision.outcomes) if decision is not None else None
        await tx.execute(
            "INSERT INTO transitions (delivery_id, seq, at, state, reason, outcomes)"
            " VALUES (?, (SELECT COALESCE(MAX(seq), 1) + 1 FROM transitions"
            " WHERE delivery_id = ?), ?, ?, ?, ?)",
            (delivery_id, delivery_id, at, state.value, reason, kept),
        )
        if decision is not None:
            await SqlIntake._record_decision(tx, delivery_id, state, at, decision, fresh=False)

    @staticmethod
    async def _record_decision(
        tx: Tx,
        delivery_id: str,
        state: DeliveryState,
        at: int,
        decision: Decision,
        *,
        fresh: bool,
    ) -> None:
        """What a decision leaves besides its transition (`fresh`: the delivery is new, so
        nothing of it is kept yet and no sequence needs a look-up).

        Every outcome is kept as JSON on the transition the decision caused: one row per
        decision, not one per policy. The `outcomes` table gets only those that queries look
        for (the shadow report: shadow outcomes; the review queue: holds): every verdict but
        an enforced forward. Most decisions write no row there.
        """
        await SqlIntake._record_waits(tx, delivery_id, state, decision, fresh=fresh)
        notable = [
            o for o in decision.outcomes if o.mode is SHADOW or o.verdict.action is not FORWARD
        ]
        if not notable:
            return
        base = 0
        if not fresh:
            row = await _one(
                tx,
                "SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE delivery_id = ?",
                (delivery_id,),
            )
            base = int(row[0]) if row else 0
        args: list[Any] = []
        for seq, outcome in enumerate(notable, base + 1):
            policy, action, mode, why, error = codec.outcome_columns(outcome)
            args += [
                delivery_id,
                seq,
                at,
                policy,
                action,
                mode,
                why,
                codec.micros(outcome.verdict.until),
                error,
            ]
        await tx.execute(
            "INSERT INTO outcomes (delivery_id, seq, at, policy, action, mode, reason, until,"
            " error) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(notable)),
            args,
        )

    @staticmethod
    async def _record_waits(
        tx: Tx, delivery_id: str, state: DeliveryState, decision: Decision, *, fresh: bool
    ) -> None:
        """Keep the fact keys a new decision waits on, replacing the previous decision's."""
        if not fresh:
            await tx.execute("DELETE FROM waits WHERE delivery_id = ?", (delivery_id,))
        if state not in (DeliveryState.DELAYED, DeliveryState.HELD):
            return
        # A held delivery waits only on what the holding policy waits on: one held for review
        # of its campaign stays there whatever fact another policy expects.
        keys = sorted(
            {
                key
                for outcome in decision.outcomes
                if outcome.mode is Mode.ENFORCE
                and (state is DeliveryState.DELAYED or outcome.verdict.action is Action.HOLD)
                for key in outcome.verdict.wakes_on
            }
        )
        for key in keys:
            await tx.execute(
                "INSERT INTO waits (delivery_id, key) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (delivery_id, key),
            )

    @staticmethod
    async def _reserve(tx: Tx, delivery_ids: Sequence[str], at: int) -> None:
        """Count these deliveries in their recipients' send history from `at`."""
        await tx.execute(
            "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class,"
            " content_hash, at, offer) SELECT d.id, d.recipient_key, d.domain, d.campaign,"
            " m.class, m.content_hash, ?, m.offer"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            f" WHERE d.id IN ({_marks(len(delivery_ids))}) ON CONFLICT (delivery_id) DO NOTHING",
            (at, *delivery_ids),
        )

    async def get_message(self, message_id: str) -> Message | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, f"{codec.MESSAGE_SELECT} WHERE id = ?", (message_id,))

        row = await self._read(job)
        return None if row is None else codec.message_from_row(row)

    async def message_content(self, message_id: str) -> bytes:
        kept = self._cache.content(message_id)
        if kept is not None:
            return kept

        # A point read returns the content only when it is small (SQLite reads inline on the
        # loop's thread, and loading 20 MB there stalls everything); a larger one is read
        # again as a scan. length() of a blob does not load it.
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx,
                "SELECT CASE WHEN length(content) <= ? THEN content END, length(content),"
                " chunks FROM messages WHERE id = ?",
                (LARGE, message_id),
            )

        async def whole(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, "SELECT content FROM messages WHERE id = ?", (message_id,))

        row = await self._read(job)
        if row is not None and row[2]:
            row = (await sql_content.read_chunks(self._scan, message_id, row[2]),)
        elif row is not None and row[0] is None and row[1] is not None:
            row = await self._scan(whole)
        if row is None or row[0] is None:
            raise Conflict(f"message {message_id} has no stored content")
        content = bytes(row[0])
        self._cache.keep_content(message_id, content)
        return content

    async def esp_request(self, message_id: str) -> EspRequest | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx,
                "SELECT esp, template, body, chunks FROM esp_requests WHERE message_id = ?",
                (message_id,),
            )

        row = await self._read(job)
        if row is None:
            return None
        body = bytes(row[2])
        if row[3]:
            body = await sql_content.read_chunks(
                self._scan, message_id, row[3], sql_content.ESP_BODY
            )
        return EspRequest(row[0], body, row[1])

    async def idempotent_response(self, key: str, since: datetime) -> IdempotencyRecord | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(
                tx,
                "SELECT message_id, response, fingerprint FROM idempotency"
                " WHERE key = ? AND created_at >= ?",
                (key, to_micros(since)),
            )

        row = await self._read(job)
        if row is None:
            return None
        return IdempotencyRecord(key, row[0], bytes(row[1]), fingerprint=row[2])
