"""A prune in windows forgets exactly what one prune of the whole tables would.

`SqlRetention.prune` walks each table in windows of `WINDOW` rows, a transaction per window
(so the write lock is never held long). Here the windows are three rows wide over a store of
varied messages, deliveries, history, events, facts and idempotency keys, with what goes
scattered among what stays, and the rows left are compared with what the single-statement
prune (the reference below, sendguard's prune before the windows) would have left.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from sendguard.clock import to_micros
from sendguard.deliveries import Change, IdempotencyRecord, NewDelivery
from sendguard.esp_request import EspRequest
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.message import DeliveryState, Message
from sendguard.pruning import PruneCutoffs
from sendguard.store import sql_retention
from sendguard.store.base import Store
from sendguard.store.sql_jobs import SqlJobs, Tx
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message

S = DeliveryState
HOUR = timedelta(hours=1)
FINAL = "(state = 'sent' OR state = 'failed' OR state = 'dropped')"

# Every table a prune deletes from, with the columns that name a row.
TABLES = {
    "messages": "id",
    "deliveries": "id",
    "transitions": "delivery_id, seq",
    "outcomes": "delivery_id, seq",
    "waits": "delivery_id",
    "requirements": "key, message_id",
    "esp_requests": "message_id",
    "history": "delivery_id",
    "events": "id",
    "facts": "key, contact",
    "idempotency": "key",
}


async def fill(store: Store, rng: random.Random) -> None:
    """Messages received over 100 hours, each with one to three deliveries that end at some
    time in one of every state; events, facts and idempotency keys of every age."""
    for i in range(60):
        base = make_message(tuple(f"p{i}-{j}@example.org" for j in range(rng.randint(1, 3))))
        message = Message(**{**base.__dict__, "received_at": T0 + i * HOUR})
        news = []
        for recipient in message.recipients:
            state = rng.choice([S.QUEUED, S.HELD, S.DROPPED, S.DELAYED])
            verdict = {
                S.QUEUED: Verdict.forward(),
                S.HELD: Verdict.hold("review", wakes_on=(f"h{i}",)),
                S.DROPPED: Verdict.drop("no"),
                S.DELAYED: Verdict.delay(T0 + 200 * HOUR, "later", wakes_on=(f"w{i}",)),
            }[state]
            due = T0 + 200 * HOUR if state is S.DELAYED else None
            news.append(
                NewDelivery(
                    f"{message.id}-{recipient[:5]}", recipient, state, "d", decision(verdict), due
                )
            )
        key = IdempotencyRecord(f"key-{rng.randrange(10**6):06d}", message.id, b"{}")
        request = EspRequest("postmark", b"{}") if i % 4 == 0 else None
        with_key = key if i % 3 else None
        await store.add_message(message, b"Subject: Hi\r\n\r\nbody\r\n", news, with_key, request)
        for new in news:
            if new.state is S.QUEUED:
                end = rng.choice([S.SENT, S.SENT, S.FAILED, S.QUEUED])
                at = T0 + rng.uniform(i, 110) * HOUR
                if rng.random() < 0.5:  # a retry first: a transition of its own
                    await store.change(new.id, Change(S.DEFERRED, "4xx", at - HOUR, due_at=at))
                if end is not S.QUEUED:
                    await store.change(new.id, Change(end, "done", at))
    for n in range(40):
        kind = rng.choice([EventType.OPEN, EventType.CLICK, EventType.PURCHASE])
        await store.add_event(
            Event(kind, f"p{n % 9}-0@example.org", T0 + rng.uniform(0, 100) * HOUR)
        )
    for n in range(40):
        contact = None if n % 7 == 0 else f"c{rng.randrange(12)}@example.org"
        await store.put_fact(
            Fact(f"k{rng.randrange(4)}", "v", T0 + rng.uniform(0, 100) * HOUR, contact)
        )


def micros(at: Any) -> int | None:
    return None if at is None else to_micros(at)


async def reference(tx: Tx, cut: PruneCutoffs) -> int:
    """The prune as whole-table statements in one transaction (sendguard's until the windows)."""
    gone = 0
    if cut.deliveries is not None:
        at = micros(cut.deliveries)
        done = f"SELECT id FROM deliveries WHERE {FINAL} AND updated_at < ?"
        for table in ("transitions", "outcomes", "waits"):
            await tx.execute(f"DELETE FROM {table} WHERE delivery_id IN ({done})", (at,))
        gone = await tx.execute(f"DELETE FROM deliveries WHERE id IN ({done})", (at,))
        orphans = (
            "SELECT id FROM messages m WHERE received_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.message_id = m.id) AND NOT EXISTS"
            " (SELECT 1 FROM edits e JOIN deliveries d ON d.message_id = e.edited_message_id"
            " WHERE e.message_id = m.id OR e.origin_message_id = m.id)"
        )
        for table in ("requirements", "esp_requests", "content_chunks"):
            await tx.execute(f"DELETE FROM {table} WHERE message_id IN ({orphans})", (at,))
        await tx.execute(f"DELETE FROM messages WHERE id IN ({orphans})", (at,))
    kept = sorted(cut.events_kept)
    spare = f" AND type NOT IN ({', '.join('?' * len(kept))})" if kept else ""
    for table, column, cutoff, extra in (
        ("history", "at", cut.history, ""),
        ("events", "at", cut.events, spare),
        ("facts", "observed_at", cut.facts, ""),
        ("idempotency", "created_at", cut.idempotency, ""),
    ):
        if cutoff is not None:
            args = (micros(cutoff), *(kept if extra else ()))
            await tx.execute(f"DELETE FROM {table} WHERE {column} < ?{extra}", args)
    return gone


async def read_rows(tx: Tx) -> dict[str, set[tuple[Any, ...]]]:
    return {
        table: {tuple(row) for row in await tx.fetch(f"SELECT {keys} FROM {table}")}
        for table, keys in TABLES.items()
    }


class Undo(Exception):
    """Raised to roll back the reference's transaction, with what it left."""

    def __init__(self, left: dict[str, set[tuple[Any, ...]]], gone: int) -> None:
        super().__init__("undo")
        self.left, self.gone = left, gone


def cutoffs(rng: random.Random) -> PruneCutoffs:
    def one() -> Any:
        return None if rng.random() < 0.15 else T0 + rng.uniform(10, 90) * HOUR

    kept = frozenset({"purchase"}) if rng.random() < 0.5 else frozenset()
    return PruneCutoffs(one(), one(), one(), one(), one(), events_kept=kept)


@pytest.mark.parametrize(
    ("seed", "window", "content_bytes"),
    [
        (0, 3, sql_retention.CONTENT_BYTES),
        (1, 3, sql_retention.CONTENT_BYTES),
        (2, 3, 12),
        (3, 1000, 12),
    ],
)
async def test_a_prune_in_windows_leaves_what_one_whole_prune_leaves(
    store: Store, seed: int, window: int, content_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows of three rows; runs of messages of at most 12 octets of content (the messages
    # here have 5: two a transaction), within windows of three rows and of a thousand.
    if not isinstance(store, SqlJobs):
        pytest.skip("the windows are SqlRetention's")
    rng = random.Random(seed)
    await fill(store, rng)
    cut = cutoffs(rng)
    before = await store._scan(read_rows)

    async def whole(tx: Tx) -> None:
        gone = await reference(tx, cut)
        raise Undo(await read_rows(tx), gone)

    with pytest.raises(Undo) as expected:  # what the reference leaves, read and rolled back
        await store._write(whole)
    assert await store._scan(read_rows) == before

    monkeypatch.setattr(sql_retention, "WINDOW", window)
    monkeypatch.setattr(sql_retention, "CONTENT_BYTES", content_bytes)
    gone = await store.prune(cut)
    left = await store._scan(read_rows)
    for table in TABLES:
        assert left[table] == expected.value.left[table], table
    assert gone == expected.value.gone
    assert sum(map(len, before.values())) > sum(map(len, left.values())) > 0  # a real mix
