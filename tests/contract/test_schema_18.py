"""Schema 18 (PostgreSQL's alone): a send's `history.sent` is set by a HOT update, which writes
no index entry. A store written at schema 17 upgrades; after it, the change into `sent` sets
the history row as before, in place; SQLite's schema is what 17 made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from sendguard.store.postgres import PostgresStore
from sendguard.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from sendguard.store.sqlite_schema import MIGRATIONS, migrate
from tests.support.postgres import DSN, drop_schema, postgres_at_version

_ROWS = [
    "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
    " campaign, class, size, content_hash, content) VALUES ('m1', 1, 'smtp', 'shop@example.com',"
    " '[\"ann@example.org\"]', '[]', '{}', NULL, 'marketing', 5, 'h', 'x'::bytea)",
    "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, state,"
    " created_at, updated_at) VALUES ('d1', 'm1', 'ann@example.org', 'ann@example.org',"
    " 'example.org', 'sending', 1, 1)",
    "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class, content_hash,"
    " at, sent) VALUES ('d1', 'ann@example.org', 'example.org', NULL, 'marketing', 'h', 1, 0)",
]


async def _sent_in_place(conn: asyncpg.Connection) -> tuple[int, int]:
    """The change of `d1` into `sent`, in a transaction of its own: the history row's `sent`
    after it, and how many of history's rows it updated by HOT updates."""
    async with conn.transaction():
        await conn.execute("UPDATE deliveries SET state = 'sent' WHERE id = 'd1'")
        hot = await conn.fetchval("SELECT pg_stat_get_xact_tuples_hot_updated('history'::regclass)")
    sent = await conn.fetchval("SELECT sent FROM history WHERE delivery_id = 'd1'")
    return int(sent), int(hot)


@pytest.mark.postgres
async def test_a_schema_17_postgresql_store_upgrades_and_sets_sent_in_place() -> None:
    schema = await postgres_at_version(17, [(sql, ()) for sql in _ROWS])
    store = PostgresStore(DSN, schema=schema, pool_size=1)
    try:
        await store.open()
        await store.close()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            latest = await conn.fetchval("SELECT max(version) FROM sendguard_schema")
            assert latest == len(PG_MIGRATIONS)
            assert len(PG_MIGRATIONS) >= 18
            index = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
                " AND indexname = 'history_recipient'",
                schema,
            )
            assert index.endswith("(recipient_key, at)")
            assert await conn.fetchval(
                "SELECT reloptions FROM pg_class WHERE oid = 'history'::regclass"
            ) == ["fillfactor=90"]
            # No SET clause: nothing saved, set and restored per call.
            assert (
                await conn.fetchval(
                    "SELECT proconfig FROM pg_proc WHERE proname = 'history_sent'"
                    " AND pronamespace = $1::regnamespace",
                    schema,
                )
                is None
            )
            assert await _sent_in_place(conn) == (1, 1)
        finally:
            await conn.close()
    finally:
        await store.close()
        await drop_schema(schema)


@pytest.mark.postgres
async def test_the_trigger_names_its_own_schema_whatever_the_search_path() -> None:
    schema = await postgres_at_version(18, [(sql, ()) for sql in _ROWS])
    try:
        # A client whose search path does not name the store's schema (psql, an admin).
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(f"UPDATE \"{schema}\".deliveries SET state = 'sent' WHERE id = 'd1'")
            sent = await conn.fetchval(
                f"SELECT sent FROM \"{schema}\".history WHERE delivery_id = 'd1'"
            )
            assert sent == 1
        finally:
            await conn.close()
    finally:
        await drop_schema(schema)


def test_sqlite_s_schema_18_changes_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        assert migrate(conn)[-1] == len(MIGRATIONS)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 18
        (index,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'history_recipient'"
        ).fetchone()
        assert "sent" in index  # the covering index SQLite's reads use, as 17 made it
    finally:
        conn.close()
