"""The statements of the hot path find deliveries through an index: none scans the table.

Every message runs these (intake, a decision's reads, the claim, `sent`, the dispatcher's next
due time, waking deliveries that wait): each is run as the store runs it, captured with the
trace callback, and `EXPLAIN QUERY PLAN` of each must not SCAN `deliveries` (a full pass over
the table or over one of its indexes, which grows with every delivery ever kept). An index
dropped, or a query rewritten so that SQLite's planner no longer finds one, fails here.
docs/stores.md lists which index serves which query.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from sendguard.deliveries import Change, IdempotencyRecord
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.message import DeliveryState
from sendguard.resend import CopyQuery
from sendguard.store import sql_retention
from sendguard.store.sqlite import SQLiteStore
from tests.contract.test_store import LEASE, T0, add, make_message

# A SCAN of the table, under its name or an alias (`d`), with or without an index.
_SCAN = re.compile(r"^SCAN (deliveries|d)\b")


async def test_no_statement_of_the_hot_path_scans_deliveries(tmp_path: Path) -> None:
    statements: list[str] = []
    store = SQLiteStore(tmp_path / "plans.db", trace=statements.append)
    await store.open()
    try:
        # Something of each kind, so that every statement has rows to look at.
        for state in (DeliveryState.QUEUED, DeliveryState.DELAYED, DeliveryState.HELD):
            await add(store, state, recipients=("a@example.org", "b@example.org"))
        message, _ = await add(store)
        statements.clear()

        # A decision's reads: the recipient's records (with earlier copies of an SMTP
        # message), human_hold's blast count, repetition's content count.
        await store.recipient_reads(
            "a@example.org",
            history_since=T0 - timedelta(days=30),
            events_since=T0,
            copies=CopyQuery(7, T0 - timedelta(days=1)),
        )
        await store.count_campaign("spring", T0 - timedelta(hours=1), at_most=1000)
        await store.count_content(
            message.content_hash or "", since=T0 - timedelta(days=30), at_most=3
        )
        await store.count_content(
            message.content_hash or "", campaign="spring", before=message.id, at_most=3
        )
        # The dispatcher: its next due time, a claim, `sent`.
        await store.next_due_at()
        claimed = await store.claim_due(T0, "w", 10, LEASE, send_within=timedelta(days=5))
        assert claimed
        await store.change(
            claimed[0].id,
            Change(
                DeliveryState.SENT,
                "250 ok",
                T0,
                expect=frozenset({DeliveryState.SENDING}),
                owner="w",
            ),
        )
        # Facts and events wake what waits on them.
        await store.wake_waiting(T0, fact_key="meeting:1:status", contact="a@example.org")
        await store.wake_waiting(T0, recipient="a@example.org", held=True)
    finally:
        await store.close()

    ran = [s for s in statements if "deliveries" in s and not s.lstrip().startswith("INSERT")]
    ran += [s for s in statements if re.match(r"\s*INSERT .* SELECT ", s, re.S)]
    assert len(ran) >= 9
    conn = sqlite3.connect(tmp_path / "plans.db")
    try:
        plans = {sql: [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")] for sql in ran}
    finally:
        conn.close()
    scans = {sql[:120]: [s for s in plan if _SCAN.match(s)] for sql, plan in plans.items()}
    assert {sql: found for sql, found in scans.items() if found} == {}
    # Due work through the partial index made for it (due_at order), not every delivery in a
    # due state: the dispatcher's next due time (on the event loop) and its claims.
    due = [plan for sql, plan in plans.items() if "due_at" in sql and "deliveries_due" in str(plan)]
    assert len(due) >= 2, plans
    # human_hold's blast count, once per decision, reads only the campaign's window.
    (blast,) = [plan for sql, plan in plans.items() if "WHERE campaign = " in sql]
    assert any("(campaign=? AND created_at>?)" in step for step in blast), blast
    # Earlier copies: one probe of the partial index on (resend key, recipient key).
    (copies,) = [plan for sql, plan in plans.items() if "resend_key = " in sql]
    assert any(
        "INDEX deliveries_resend (resend_key=? AND recipient_key=?)" in step for step in copies
    ), copies


def _ephemeral_tables(conn: sqlite3.Connection, sql: str) -> int:
    """How many temporary B-trees a run of `sql` builds (`OpenEphemeral` in its program)."""
    return sum(1 for row in conn.execute(f"EXPLAIN {sql}") if row[1] == "OpenEphemeral")


async def test_writes_of_deliveries_build_no_tree_for_the_due_index(tmp_path: Path) -> None:
    # `deliveries_due`'s condition is evaluated for every inserted row, and for a changed row
    # before and after. As an IN list (more than two constants) SQLite builds a temporary
    # B-tree of its values for each evaluation, every time a statement runs; spelt as
    # comparisons joined by OR (schema 13) it builds none.
    statements: list[str] = []
    store = SQLiteStore(tmp_path / "writes.db", trace=statements.append)
    await store.open()
    try:
        later = T0 + timedelta(days=1)
        await add(store, DeliveryState.DELAYED, recipients=("a@example.org",), due=later)
        await add(store, recipients=("b@example.org",))
        (claimed,) = await store.claim_due(T0, "w", 10, LEASE, send_within=timedelta(days=5))
        await store.change(
            claimed.id,
            Change(DeliveryState.SENT, "250 ok", T0, expect=frozenset({DeliveryState.SENDING})),
        )
        await store.recipient_reads(
            "a@example.org", history_since=T0 - timedelta(days=30), events_since=T0
        )
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "writes.db")
    try:
        inserts = [s for s in statements if s.lstrip().startswith("INSERT INTO deliveries ")]
        assert len(inserts) == 2
        assert [_ephemeral_tables(conn, s) for s in inserts] == [0, 0]
        # One statement: SQLite reports schema 17's trigger (its WHEN, its body) to the trace
        # callback with the statement's own text again.
        (sent,) = {s for s in statements if re.match(r"\s*UPDATE deliveries SET state = 'sent'", s)}
        # One for its RETURNING rows, none for the index's condition (three before).
        assert _ephemeral_tables(conn, sent) <= 1, sent
        # The recipient read finds a person's sends in history_recipient alone.
        (read,) = [s for s in statements if "FROM history h" in s]
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {read}")]
        assert any("COVERING INDEX history_recipient" in step for step in plan), plan
    finally:
        conn.close()


async def test_a_prune_reads_windows_in_key_order_and_deletes_through_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A prune walks each table in windows of WINDOW rows in key order and deletes each window
    # by its key range: a read sorts nothing (a temporary B-tree for ORDER BY would read the
    # whole table for every window), and a delete scans no table (each ran once per window).
    monkeypatch.setattr(sql_retention, "WINDOW", 2)
    statements: list[str] = []
    store = SQLiteStore(tmp_path / "prune.db", trace=statements.append)
    await store.open()
    try:
        for n in range(5):
            _, (new,) = await add(store, recipients=(f"p{n}@example.org",))
            await store.change(new.id, Change(DeliveryState.SENT, "250 ok", T0))
            await store.add_event(Event(EventType.OPEN, f"p{n}@example.org", T0))
            await store.put_fact(Fact("k", "v", T0, f"p{n}@example.org"))
        await add(store, DeliveryState.DROPPED)
        keyed = make_message(("q@example.org",))
        await store.add_message(keyed, b"x", [], IdempotencyRecord("key", keyed.id, b"{}"))
        statements.clear()
        assert await store.prune(T0 + timedelta(days=1)) == 6
    finally:
        await store.close()
    ran = {
        s
        for s in statements
        if not re.match(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)\b", s)
    }
    conn = sqlite3.connect(tmp_path / "prune.db")
    try:
        plans = {sql: [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")] for sql in ran}
    finally:
        conn.close()
    for table in ("deliveries", "messages", "history", "events", "facts", "idempotency"):
        assert any(f"DELETE FROM {table} " in sql for sql in plans), table
    sorted_ = {sql[:100]: plan for sql, plan in plans.items() if "TEMP B-TREE" in str(plan)}
    assert sorted_ == {}
    scans = {
        sql[:100]: steps
        for sql, plan in plans.items()
        if (steps := [s for s in plan if s.startswith("SCAN ")])
        and not (sql.lstrip().startswith("SELECT") and "LIMIT" in sql)
    }
    assert scans == {}
