"""The dispatcher's work queue (`WorkQueue`): claims and leases of due deliveries, their
release, state changes (`sending`, `sent`, `deferred`, `failed`, a reviewer's release...), and
waking deliveries that wait on a fact or a recipient.

Transactions that span two concerns, on purpose: a `change` commits with the decision it
records and the send history it reserves or releases (`_record`, `_record_decision`,
`_reserve`: intake and decisions, `sql_intake.py`) and with its webhook event (`_emit`,
`sql_outbox.py`); `wake_waiting` likewise for the held deliveries it releases. A claim also
reads the messages of the deliveries it takes (intake's table) in its transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sendguard.address import recipient_key
from sendguard.clock import to_micros
from sendguard.deliveries import Change
from sendguard.errors import Conflict
from sendguard.lifecycle import LifecycleEvent, lifecycle_event
from sendguard.message import Delivery, DeliveryState, HoldOrigin
from sendguard.store import codec
from sendguard.store.sql_intake import SqlIntake
from sendguard.store.sql_jobs import Tx, Write, _marks, _one
from sendguard.store.sqlite_schema import DUE_CONDITION

DUE_STATES = frozenset(
    {DeliveryState.QUEUED, DeliveryState.DELAYED, DeliveryState.DEFERRED, DeliveryState.HELD}
)
"""States in which a delivery is due at its `due_at`: `DUE_CONDITION`, as Python sees them."""
# The same states as a list. Only PostgreSQL's queries use it: its planner proves that
# `state IN (…)` implies `deliveries_due`'s condition; SQLite's takes the index only for the
# condition's own text (`DUE_CONDITION`).
DUE_STATES_SQL = "('queued', 'delayed', 'deferred', 'held')"
# States a delivery never leaves in sendguard's own use: the transition into one is kept on
# the delivery's row (`final_reason`), not as a transitions row.
_FINAL = frozenset({DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.DROPPED})
# The next transitions row of delivery `d.id`: its first transition is on its row (seq 1),
# or, for a delivery created before schema 10, the transitions row with seq 1.
_NEXT_SEQ = "(SELECT COALESCE(MAX(seq), 1) + 1 FROM transitions t WHERE t.delivery_id = d.id)"
_RETURNED = f"{codec.DELIVERY_ROW_COLUMNS}, message_id"
"""What `change` reads back of the changed row (`finish` reads nothing)."""
# The `attempt N` transitions of the deliveries a claim marked `sending`, from a source of
# their rows as the claim left them (`{}`: a FROM clause naming them `d`, with its WHERE).
SENDING_TRANSITIONS = (
    "INSERT INTO transitions (delivery_id, seq, at, state, reason)"
    f" SELECT d.id, {_NEXT_SEQ}, ?, 'sending', 'attempt ' || d.attempts FROM {{}}"
)


class SqlDispatch(SqlIntake):
    """Claims, leases and state changes of deliveries, as the dispatcher makes them."""

    #: whether `_lease_and_mark` writes with one statement (then a claim runs as `_write_one`)
    marks_in_one_statement = False

    async def wake_waiting(
        self,
        now: datetime,
        *,
        fact_key: str | None = None,
        recipient: str | None = None,
        contact: str | None = None,
        held: bool = False,
    ) -> int:
        at = to_micros(now)
        # Through `waits`, a fact for one contact wakes only deliveries to that person.
        to_contact = " AND recipient_key = ?" if contact is not None else ""
        contact_args = (recipient_key(contact),) if contact is not None else ()

        async def job(tx: Tx) -> int:
            woken = 0
            if fact_key is not None:
                woken += await tx.execute(
                    "UPDATE deliveries SET due_at = ? WHERE state = 'delayed' AND due_at > ?"
                    " AND (message_id IN (SELECT message_id FROM requirements WHERE key = ?)"
                    f" OR (id IN (SELECT delivery_id FROM waits WHERE key = ?){to_contact}))",
                    (at, at, fact_key, fact_key, *contact_args),
                )
                woken += await self._rejudge_held(
                    tx,
                    f"id IN (SELECT delivery_id FROM waits WHERE key = ?){to_contact}",
                    (fact_key, *contact_args),
                    f"fact {fact_key} arrived; judged again",
                    at,
                )
            if recipient is not None:
                key = recipient_key(recipient)
                woken += await tx.execute(
                    "UPDATE deliveries SET due_at = ? WHERE state = 'delayed' AND due_at > ?"
                    " AND recipient_key = ?",
                    (at, at, key),
                )
                if held:
                    woken += await self._rejudge_held(
                        tx, "recipient_key = ?", (key,), f"{key} changed; judged again", at
                    )
            if woken:
                await self._notify(tx)
            return woken

        return await self._write(job)

    async def _rejudge_held(
        self, tx: Tx, where: str, args: Sequence[Any], why: str, at: int
    ) -> int:
        """Move deliveries a policy held (not a pause) that match `where` to `delayed`, due
        now: every policy judges them again at once (sent if the premise now holds, dropped if
        the person is now suppressed, held again with a new review expiry otherwise)."""
        held = await tx.fetch(
            "SELECT id FROM deliveries WHERE state = 'held' AND hold_origin = 'policy'"
            f" AND {where} ORDER BY id",
            args,
        )
        for (delivery_id,) in held:
            await tx.execute(
                "UPDATE deliveries SET state = 'delayed', due_at = ?, updated_at = ?,"
                " hold_origin = NULL, owner = NULL, lease_until = NULL WHERE id = ?",
                (at, at, delivery_id),
            )
            await self._record(tx, delivery_id, DeliveryState.DELAYED, why, at, None)
            if self._webhook_targets:
                await self._emit(tx, delivery_id, LifecycleEvent.RELEASED, why, at)
        return len(held)

    async def _lease_and_mark(self, tx: Tx, lease: Write, at: int) -> list[Sequence[Any]]:
        """Run `lease` (a claim of deliveries returning DELIVERY_ROW_COLUMNS) and write the
        `attempt N` transition of each delivery it marked `sending`: `sending` and updated at
        `at` (one left `sending` past its lifetime is not, and fails). Returns its rows."""
        taken = await tx.fetch(*lease)
        marked = [r[0] for r in taken if r[2] == "sending" and r[4] == at]
        if marked:
            await tx.execute(
                SENDING_TRANSITIONS.format(f"deliveries d WHERE d.id IN ({_marks(len(marked))})"),
                (at, *marked),
            )
        return taken

    def _claimable(self, at: int, limit: int) -> tuple[str, Sequence[Any], bool]:
        """The SELECT of the ids of deliveries a claim at `at` takes, in order (`_lease`
        appends the LIMIT), its arguments, and whether it locks the rows itself.

        Due ones, and those left `sending` by a claim whose lease ran out or was released.
        """
        del limit
        due = (
            f"SELECT id FROM deliveries WHERE (({DUE_CONDITION} AND due_at <= ?)"
            " OR state = 'sending') AND (lease_until IS NULL OR lease_until < ?)"
            " ORDER BY due_at"
        )
        return due, (at, at), False

    async def claim_due(
        self,
        now: datetime,
        owner: str,
        limit: int,
        lease: timedelta,
        *,
        send_within: timedelta | None = None,
    ) -> Sequence[Delivery]:
        at, until = to_micros(now), to_micros(now + lease)
        also: tuple[str, Sequence[Any]] = ("", ())
        if send_within is not None:
            # Claimed and marked `sending` in one statement (the old values on the right).
            fresh = to_micros(now - send_within)
            sendable = (
                "state IN ('queued', 'deferred', 'sending')"
                " AND (first_attempt_at IS NULL OR first_attempt_at >= ?)"
            )
            also = (
                f", state = CASE WHEN {sendable} THEN 'sending' ELSE state END,"
                f" attempts = attempts + CASE WHEN {sendable} THEN 1 ELSE 0 END,"
                f" first_attempt_at = CASE WHEN {sendable}"
                " THEN COALESCE(first_attempt_at, ?) ELSE first_attempt_at END,"
                f" updated_at = CASE WHEN {sendable} THEN ? ELSE updated_at END",
                (fresh, fresh, fresh, at, fresh, at),
            )

        due, due_args, locked = self._claimable(at, limit)
        claim = self._lease(
            "deliveries",
            due,
            due_args,
            limit,
            owner,
            until,
            also,
            f"{codec.DELIVERY_ROW_COLUMNS}, message_id",
            locked=locked,
        )

        async def job(tx: Tx) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
            if send_within is None:
                taken = await tx.fetch(*claim)
            else:
                taken = await self._lease_and_mark(tx, claim, at)
            if not taken:
                return [], []
            return taken, await self._uncached_messages(tx, taken)

        one = send_within is None or self.marks_in_one_statement
        taken, messages = await (self._write_one if one else self._write)(job)
        # In due order, as claimed.
        taken.sort(key=lambda r: (r[5] is not None, r[5] or 0, r[0]))
        return await self._deliveries(taken, messages)

    async def _release_claims_of(self, gone: Callable[[str], bool]) -> int:
        """At start: release every claim whose owner `gone` says is no more (recover)."""

        async def job(tx: Tx) -> int:
            owners = await tx.fetch("SELECT DISTINCT owner FROM deliveries WHERE owner IS NOT NULL")
            released = 0
            for (owner,) in owners:
                if gone(owner):
                    released += await tx.execute(
                        "UPDATE deliveries SET owner = NULL, lease_until = NULL WHERE owner = ?",
                        (owner,),
                    )
            return released

        return await self._write(job)

    async def release(self, delivery_ids: Sequence[str], owner: str) -> None:
        if not delivery_ids:
            return

        async def job(tx: Tx) -> None:
            await tx.execute(
                "UPDATE deliveries SET owner = NULL, lease_until = NULL"
                f" WHERE owner = ? AND id IN ({_marks(len(delivery_ids))})",
                (owner, *delivery_ids),
            )

        await self._write(job)

    async def next_due_at(self) -> datetime | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, f"SELECT MIN(due_at) FROM deliveries WHERE {DUE_CONDITION}")

        row = await self._read(job)
        return codec.moment(row[0]) if row else None

    async def change(self, delivery_id: str, change: Change) -> Delivery:
        delivery = await self._change(delivery_id, change, returning=True)
        assert delivery is not None
        return delivery

    async def finish(self, delivery_id: str, change: Change) -> None:
        # Without RETURNING: the row's columns, the temporary table SQLite keeps them in, and
        # the Delivery made of them on the loop are work nobody reads after a send.
        await self._change(delivery_id, change, returning=False)

    async def _change(
        self, delivery_id: str, change: Change, *, returning: bool
    ) -> Delivery | None:
        at = to_micros(change.at)
        final = change.to in _FINAL
        # Nobody works on a delivery in a final state: its claim ends with it.
        keep_claim = (change.keep_claim or change.to is DeliveryState.SENDING) and not final
        # The transition into a final state is kept on the row. A delivery may be in one only
        # if the change does not exclude it (sendguard's own changes all do: by the states
        # they expect, or by the owner's claim, which a final state does not keep); then its
        # final transition moves to `transitions` first.
        may_be_final = change.owner is None and (
            change.expect is None or bool(change.expect & _FINAL)
        )
        kept = (
            codec.dump_outcomes(change.decision.outcomes) if change.decision is not None else None
        )
        # What the change expects is part of the UPDATE: one statement, no read before it.
        where = "id = ?"
        expected: list[Any] = []
        if change.expect is not None:
            expected += sorted(s.value for s in change.expect)
            where += f" AND state IN ({_marks(len(expected))})"
        if change.owner is not None:
            where += " AND owner = ?"
            expected.append(change.owner)
        wake = change.due_at is not None and change.due_at <= change.at and not keep_claim
        # `sent` after a send (no decision, no webhook event): the UPDATE is the only write.
        alone = (
            change.to is DeliveryState.SENT
            and change.decision is None
            and not may_be_final
            and not self._webhook_targets
            and not wake
        )

        async def job(tx: Tx) -> tuple[Sequence[Any] | None, list[Sequence[Any]]]:
            before = None
            if self._webhook_targets:  # the event depends on the state it leaves
                before = await _one(tx, "SELECT state FROM deliveries WHERE id = ?", (delivery_id,))
            if may_be_final:
                await tx.execute(
                    "INSERT INTO transitions (delivery_id, seq, at, state, reason, outcomes)"
                    f" SELECT d.id, {_NEXT_SEQ}, d.updated_at, d.state, d.final_reason,"
                    f" d.final_outcomes FROM deliveries d WHERE d.id = ?"
                    " AND d.final_reason IS NOT NULL",
                    (delivery_id,),
                )
            update = (
                "UPDATE deliveries SET state = ?, updated_at = ?, due_at = ?,"
                " final_reason = ?, final_outcomes = ?,"
                " attempts = attempts + ?,"
                " first_attempt_at = CASE WHEN ? THEN COALESCE(first_attempt_at, ?)"
                "   ELSE first_attempt_at END,"
                " last_error = COALESCE(?, last_error),"
                " approved_by = COALESCE(?, approved_by),"
                " override_by = COALESCE(?, override_by),"
                " hold_origin = ?,"
                " owner = CASE WHEN ? THEN owner ELSE NULL END,"
                " lease_until = CASE WHEN ? THEN lease_until ELSE NULL END"
                f" WHERE {where}"
            )
            values = (
                change.to.value,
                at,
                codec.micros(change.due_at),
                change.reason if final else None,
                kept if final else None,
                int(change.attempt),
                change.attempt,
                at,
                change.error,
                change.approved_by,
                change.override_by,
                (change.hold_origin or HoldOrigin.POLICY)
                if change.to is DeliveryState.HELD
                else None,
                keep_claim,
                keep_claim,
                delivery_id,
                *expected,
            )
            row: Sequence[Any] | None = None
            if returning:
                rows = await tx.fetch(f"{update} RETURNING {_RETURNED}", values)
                if not rows:
                    raise await self._refused(tx, delivery_id, change)
                row = rows[0]
            elif not await tx.execute(update, values):
                raise await self._refused(tx, delivery_id, change)
            if not final:
                await self._record(tx, delivery_id, change.to, change.reason, at, change.decision)
            elif change.decision is not None:
                await self._record_decision(
                    tx, delivery_id, change.to, at, change.decision, fresh=False
                )
            if self._webhook_targets and before is not None:
                event = lifecycle_event(DeliveryState(before[0]), change.to)
                await self._emit(tx, delivery_id, event, change.reason, at)
            if change.to is DeliveryState.QUEUED:
                await self._reserve(tx, [delivery_id], at)
            elif change.to in (DeliveryState.DROPPED, DeliveryState.FAILED):
                await tx.execute("DELETE FROM history WHERE delivery_id = ?", (delivery_id,))
            if wake:
                await self._notify(tx)
            return row, [] if row is None else await self._uncached_messages(tx, [row])

        if alone:
            # The send has happened and nobody waits on this commit but the worker: it may
            # share the next write's commit (a lone sender's next message, at idle), see
            # `_write_statement`. What a crash meanwhile costs is what it cost before the
            # commit: the delivery is still `sending` and is sent again after recovery.
            row, messages = await self._write_statement(job, linger=True)
        else:
            row, messages = await self._write(job)
        if row is None:
            return None
        (delivery,) = await self._deliveries([row], messages)
        return delivery

    async def _uncached_messages(
        self, tx: Tx, rows: Sequence[Sequence[Any]]
    ) -> list[Sequence[Any]]:
        """MESSAGE_SELECT rows of the messages of `rows` (message id last) not kept in memory."""
        missing = sorted({r[-1] for r in rows if not self._cache.has_message(r[-1])})
        if not missing:
            return []
        return await tx.fetch(
            f"{codec.MESSAGE_SELECT} WHERE id IN ({_marks(len(missing))})", missing
        )

    async def _deliveries(
        self, rows: Sequence[Sequence[Any]], messages: Sequence[Sequence[Any]]
    ) -> list[Delivery]:
        """Deliveries from DELIVERY_ROW_COLUMNS rows (message id last), their messages from
        `messages` or memory."""
        for message_row in messages:
            self._cache.keep_message(codec.message_from_row(message_row))
        found = []
        for row in rows:
            message = self._cache.message(row[-1])
            if message is None:  # dropped from memory since the job looked
                message = await self.get_message(row[-1])
                assert message is not None
            found.append(codec.delivery_from_columns(row[:-1], message))
        return found

    @staticmethod
    async def _refused(tx: Tx, delivery_id: str, change: Change) -> Conflict:
        """Why `change` matched no row: the delivery is missing, in another state or claimed
        by another owner."""
        row = await _one(tx, "SELECT state FROM deliveries WHERE id = ?", (delivery_id,))
        if row is None:
            return Conflict(f"no delivery {delivery_id}")
        state = row[0]
        if change.expect is not None and DeliveryState(state) not in change.expect:
            allowed = ", ".join(sorted(s.value for s in change.expect))
            return Conflict(f"delivery {delivery_id} is {state}, not {allowed}")
        return Conflict(f"delivery {delivery_id} is no longer claimed by {change.owner}")
