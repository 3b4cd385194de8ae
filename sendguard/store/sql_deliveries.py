"""Deliveries as the API and the review page read them (`DeliveryReads`): one delivery,
a message's, listings, and timelines (transitions and outcomes), one at a time or a whole
page's in one statement per kind. Reads only.

A delivery's timeline is kept in three places: its first transition on its row (written at
intake), those between in `transitions`, its final one on its row again (`sql_dispatch.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sendguard.address import recipient_key
from sendguard.clock import from_micros
from sendguard.deliveries import DeliveryPage, DeliveryQuery, DeliveryRecord, RecordedOutcome
from sendguard.message import Delivery, DeliveryState, Transition
from sendguard.store import codec
from sendguard.store.sql_jobs import SqlJobs, Tx, _marks, _one, _where

# Ids per `IN (...)` list: a whole page (500) in one statement, and far below the bound
# parameters SQLite (32766) and PostgreSQL (32767) allow in one (even listed three times).
_IDS_PER_STATEMENT = 1000
_TRANSITION_COLUMNS = "at, state, reason"
_OUTCOME_COLUMNS = "at, policy, action, mode, reason, until, error"
# A final transition sorts after every transitions row.
_FINAL_SEQ = 2_000_000_000


def _timeline(ids: str) -> str:
    """(delivery_id, seq, at, state, reason, outcomes) of every transition of the deliveries
    whose id matches `ids` (a condition with its own placeholders, used three times): the
    first from the row, those between from `transitions`, the final one from the row."""
    return (
        "SELECT id AS delivery_id, 1 AS seq, created_at AS at, first_state AS state,"
        " first_reason AS reason, first_outcomes AS outcomes FROM deliveries"
        f" WHERE id {ids} AND first_state IS NOT NULL"
        " UNION ALL SELECT delivery_id, seq, at, state, reason, outcomes FROM transitions"
        f" WHERE delivery_id {ids}"
        f" UNION ALL SELECT id, {_FINAL_SEQ}, updated_at, state, final_reason, final_outcomes"
        f" FROM deliveries WHERE id {ids} AND final_reason IS NOT NULL"
    )


class SqlDeliveries(SqlJobs):
    """Deliveries and their timelines, read."""

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, f"{codec.DELIVERY_SELECT} WHERE d.id = ?", (delivery_id,))

        row = await self._read(job)
        return None if row is None else codec.delivery_from_row(row)

    async def deliveries_of(self, message_id: str) -> Sequence[Delivery]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                f"{codec.DELIVERY_SELECT} WHERE d.message_id = ? OR d.message_id IN"
                " (SELECT edited_message_id FROM edits WHERE origin_message_id = ?)"
                " ORDER BY d.id",
                (message_id, message_id),
            )

        return [codec.delivery_from_row(r) for r in await self._scan(job)]

    async def list_deliveries(self, query: DeliveryQuery) -> DeliveryPage:
        where, args = _where(
            ("d.state = ?", query.state.value if query.state else None),
            ("d.campaign = ?", query.campaign),
            ("d.recipient_key = ?", recipient_key(query.recipient) if query.recipient else None),
            ("d.created_at >= ?", codec.micros(query.since)),
            ("d.id < ?", query.after),
        )
        sql = codec.DELIVERY_SELECT + where

        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(sql + " ORDER BY d.id DESC LIMIT ?", [*args, query.limit + 1])

        rows = await self._scan(job)
        page = [codec.delivery_from_row(r) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return DeliveryPage(page, page[-1].id if more and page else None)

    async def transitions(self, delivery_id: str) -> Sequence[Transition]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                f"SELECT {_TRANSITION_COLUMNS} FROM ({_timeline('= ?')}) AS t ORDER BY seq",
                (delivery_id,) * 3,
            )

        return [
            Transition(from_micros(at), DeliveryState(state), why)
            for at, state, why in await self._read(job)
        ]

    async def outcomes(self, delivery_id: str) -> Sequence[RecordedOutcome]:
        async def job(tx: Tx) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
            decided = await tx.fetch(
                f"SELECT at, outcomes FROM ({_timeline('= ?')}) AS t"
                " WHERE outcomes IS NOT NULL ORDER BY seq",
                (delivery_id,) * 3,
            )
            rows = await tx.fetch(
                f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE delivery_id = ? ORDER BY seq",
                (delivery_id,),
            )
            return decided, rows

        decided, rows = await self._read(job)
        return self._merge_outcomes(decided, rows)

    @classmethod
    def _merge_outcomes(
        cls, decided: Sequence[Sequence[Any]], rows: Sequence[Sequence[Any]]
    ) -> list[RecordedOutcome]:
        """A delivery's outcomes, oldest decision first: those kept on its transitions
        ((at, JSON) in `decided`), and rows of the outcomes table (`_OUTCOME_COLUMNS`) of
        decisions recorded before schema 8, which kept no JSON (rows of later decisions
        repeat part of their JSON and are skipped)."""
        found = [
            RecordedOutcome(from_micros(at), outcome)
            for at, text in decided
            for outcome in codec.load_outcomes(text)
        ]
        covered = {at for at, _ in decided}
        found += [cls._outcome(r) for r in rows if r[0] not in covered]
        found.sort(key=lambda o: o.at)  # stable: a decision's outcomes stay in policy order
        return found

    @staticmethod
    def _transition(row: Sequence[Any]) -> Transition:
        """A Transition from `_TRANSITION_COLUMNS`."""
        return Transition(from_micros(row[0]), DeliveryState(row[1]), row[2])

    @staticmethod
    def _outcome(row: Sequence[Any]) -> RecordedOutcome:
        """A RecordedOutcome from `_OUTCOME_COLUMNS`."""
        return RecordedOutcome(
            from_micros(row[0]),
            codec.make_outcome(row[1], row[2], row[3], row[4], codec.moment(row[5]), row[6]),
        )

    async def delivery_records(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryRecord]:
        ids = list(dict.fromkeys(delivery_ids))
        if not ids:
            return {}

        async def job(tx: Tx) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
            transitions: list[Sequence[Any]] = []
            outcomes: list[Sequence[Any]] = []
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                chunk = ids[start : start + _IDS_PER_STATEMENT]
                among = f"IN ({_marks(len(chunk))})"
                transitions += await tx.fetch(
                    f"SELECT delivery_id, {_TRANSITION_COLUMNS}, outcomes"
                    f" FROM ({_timeline(among)}) AS t ORDER BY delivery_id, seq",
                    chunk * 3,
                )
                outcomes += await tx.fetch(
                    f"SELECT delivery_id, {_OUTCOME_COLUMNS} FROM outcomes"
                    f" WHERE delivery_id {among} ORDER BY delivery_id, seq",
                    chunk,
                )
            return transitions, outcomes

        transition_rows, outcome_rows = await self._scan(job)
        transitions: dict[str, list[Transition]] = {i: [] for i in ids}
        decided: dict[str, list[Sequence[Any]]] = {i: [] for i in ids}
        for row in transition_rows:
            transitions[row[0]].append(self._transition(row[1:]))
            if row[4] is not None:
                decided[row[0]].append((row[1], row[4]))
        legacy: dict[str, list[Sequence[Any]]] = {i: [] for i in ids}
        for row in outcome_rows:
            legacy[row[0]].append(row[1:])
        return {
            i: DeliveryRecord(
                tuple(transitions[i]), tuple(self._merge_outcomes(decided[i], legacy[i]))
            )
            for i in ids
        }
