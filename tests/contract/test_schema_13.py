"""Schema 13 rebuilds two indexes (the covering `history_recipient`, `deliveries_due` spelt with
OR): a store written at schema 12 upgrades, on SQLite and on PostgreSQL, and keeps its due
delivery (the dispatcher's next due time and its claim find it) and its recipients' history."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from sendguard.clock import to_micros
from sendguard.store.base import Store
from sendguard.store.postgres import PostgresStore
from sendguard.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from sendguard.store.sqlite import SQLiteStore
from sendguard.store.sqlite_schema import MIGRATIONS
from tests.support.postgres import DSN, drop_schema, postgres_at_version
from tests.support.sqlite_versions import sqlite_at_version

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
DUE = T0 + timedelta(hours=2)
LEASE = timedelta(minutes=5)
_FIELDS = json.dumps({"campaign": "spring", "class": "marketing"})

# Rows as a schema 12 store holds them: a message, a delivery delayed until DUE, one sent
# (with its history row), in both backends' parameter styles.
_ROWS: Sequence[tuple[str, Sequence[Any]]] = (
    (
        "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
        " campaign, class, size, content_hash, content) VALUES"
        " ('m1', ?, 'smtp', 's@example.com', '[]', '[]', ?, 'spring', 'marketing', 2, 'h1', ?)",
        (to_micros(T0), _FIELDS, b"Hi"),
    ),
    (
        "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, campaign,"
        " state, created_at, updated_at, due_at, first_state, first_reason) VALUES"
        " ('d1', 'm1', 'ann@example.org', 'ann@example.org', 'example.org', 'spring',"
        " 'delayed', ?, ?, ?, 'delayed', 'frequency: over the cap')",
        (to_micros(T0), to_micros(T0), to_micros(DUE)),
    ),
    (
        "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, campaign,"
        " state, created_at, updated_at, first_state, first_reason) VALUES"
        " ('d0', 'm1', 'bo@example.org', 'bo@example.org', 'example.org', 'spring',"
        " 'sent', ?, ?, 'queued', 'frequency: within every cap')",
        (to_micros(T0), to_micros(T0)),
    ),
    (
        "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class, content_hash,"
        " at, sent, offer) VALUES ('d0', 'bo@example.org', 'example.org', 'spring', 'marketing',"
        " 'h1', ?, 0, 'o1')",
        (to_micros(T0),),
    ),
)


async def _keeps_its_due_delivery(store: Store) -> None:
    assert await store.next_due_at() == DUE
    assert await store.claim_due(DUE - timedelta(seconds=1), "w", 10, LEASE) == []
    (claimed,) = await store.claim_due(DUE, "w", 10, LEASE)
    assert claimed.id == "d1"
    reads = await store.recipient_reads(
        "bo@example.org", history_since=T0 - timedelta(days=1), events_since=None
    )
    assert [
        (h.delivery_id, h.campaign, h.content_hash, h.offer, h.sent) for h in reads.history
    ] == [("d0", "spring", "h1", "o1", True)]


async def test_a_schema_12_sqlite_store_upgrades_and_keeps_its_due_delivery(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sendguard.db"
    sqlite_at_version(path, 12, _ROWS)

    store = SQLiteStore(path)
    with structlog.testing.capture_logs() as logs:
        await store.open()
    try:
        await _keeps_its_due_delivery(store)
    finally:
        await store.close()
    # The upgrade is logged, as the PostgreSQL store logs its own: an operator who starts a
    # new sendguard on an old file sees that (and to which version) it was migrated.
    assert [(e["event"], e["path"], e["version"]) for e in logs if e["event"] == "migrated"] == [
        ("migrated", str(path), v) for v in range(13, len(MIGRATIONS) + 1)
    ]
    again = SQLiteStore(path)
    with structlog.testing.capture_logs() as logs:
        await again.open()
    await again.close()
    assert [e for e in logs if e["event"] == "migrated"] == []  # nothing to migrate, no line
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 13
        indexes = dict(conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index'"))
        assert "state = 'queued' OR" in indexes["deliveries_due"]
        assert "content_hash" in indexes["history_recipient"]
    finally:
        conn.close()


@pytest.mark.postgres
async def test_a_schema_12_postgresql_store_upgrades_and_keeps_its_due_delivery() -> None:
    schema = await postgres_at_version(12, _ROWS)
    store = PostgresStore(DSN, schema=schema, pool_size=1)
    try:
        await store.open()
        await _keeps_its_due_delivery(store)
        await store.close()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            assert await conn.fetchval("SELECT max(version) FROM sendguard_schema") == len(
                PG_MIGRATIONS
            )
            due = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
                " AND indexname = 'deliveries_due'",
                schema,
            )
            assert "'queued'" in due
        finally:
            await conn.close()
    finally:
        await store.close()
        await drop_schema(schema)
