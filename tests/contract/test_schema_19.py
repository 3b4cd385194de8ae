"""Schema 19: `requirements_message`, a message's requirements found by the message. A store
written at schema 18 upgrades on both backends; after it, a prune removes the requirements of
the message it forgets (through the index) and keeps those of a message still waiting."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from sendguard.clock import to_micros
from sendguard.store.postgres import PostgresStore
from sendguard.store.sqlite import SQLiteStore
from sendguard.store.sqlite_schema import MIGRATIONS
from tests.support.postgres import DSN, drop_schema, postgres_at_version
from tests.support.sqlite_versions import sqlite_at_version

OLD = to_micros(datetime(2026, 1, 1, tzinfo=UTC))
CUT = datetime(2026, 6, 1, tzinfo=UTC)


def _message(ident: str) -> tuple[str, tuple[object, ...]]:
    return (
        "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers,"
        " fields, campaign, class, size, content_hash, content) VALUES (?, ?, 'smtp',"
        " 'shop@example.com', '[\"ann@example.org\"]', '[]', '{}', NULL, 'marketing', 1, 'h', ?)",
        (ident, OLD, b"x"),
    )


def _delivery(ident: str, message: str, state: str) -> tuple[str, tuple[object, ...]]:
    return (
        "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, state,"
        " created_at, updated_at) VALUES (?, ?, 'ann@example.org', 'ann@example.org',"
        " 'example.org', ?, ?, ?)",
        (ident, message, state, OLD, OLD),
    )


ROWS = [
    _message("m-done"),
    _delivery("d-done", "m-done", "sent"),
    ("INSERT INTO requirements (message_id, key) VALUES (?, ?)", ("m-done", "meeting:1")),
    _message("m-wait"),
    _delivery("d-wait", "m-wait", "delayed"),
    ("INSERT INTO requirements (message_id, key) VALUES (?, ?)", ("m-wait", "meeting:1")),
]


async def test_a_schema_18_sqlite_store_upgrades_and_prunes_requirements_by_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    sqlite_at_version(path, 18, ROWS)
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.prune(CUT) == 1
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 19
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT key FROM requirements WHERE message_id = ?", ("m",)
        ).fetchall()
        assert "requirements_message" in str(plan)
        left = conn.execute("SELECT message_id, key FROM requirements").fetchall()
        assert left == [("m-wait", "meeting:1")]
    finally:
        conn.close()


@pytest.mark.postgres
async def test_a_schema_18_postgresql_store_upgrades_and_prunes_requirements_by_message() -> None:
    schema = await postgres_at_version(18, ROWS)
    store = PostgresStore(DSN, schema=schema, pool_size=1)
    try:
        await store.open()
        assert await store.prune(CUT) == 1
        await store.close()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            assert await conn.fetchval("SELECT max(version) FROM sendguard_schema") >= 19
            index = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
                " AND indexname = 'requirements_message'",
                schema,
            )
            assert index is not None and index.endswith("(message_id)")
            left = await conn.fetch("SELECT message_id, key FROM requirements")
            assert [tuple(row) for row in left] == [("m-wait", "meeting:1")]
        finally:
            await conn.close()
    finally:
        await store.close()
        await drop_schema(schema)
