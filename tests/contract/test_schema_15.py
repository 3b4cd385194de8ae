"""Schema 15 adds the review page's sign-ins (`review_sessions`, `review_throttle`): a store
written at schema 14 upgrades, on SQLite and on PostgreSQL, keeps what it held, and then keeps
sessions (by their token's hash only) and counts failed sign-ins."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from sendguard.sign_ins import StoredSession, ThrottleKey, password_check, token_hash
from sendguard.store.base import Store
from sendguard.store.postgres import PostgresStore
from sendguard.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from sendguard.store.sqlite import SQLiteStore
from sendguard.store.sqlite_schema import MIGRATIONS
from tests.support.postgres import DSN, drop_schema, postgres_at_version
from tests.support.sqlite_versions import sqlite_at_version

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
_AUDIT = (
    "INSERT INTO audit (at, actor, action, target, note, count)"
    " VALUES (1, 'ana', 'approve', 'campaign spring', 'looks fine', 3)"
)


async def _signs_in(store: Store) -> None:
    assert [e.actor for e in await store.audit(10)] == ["ana"]  # kept through the upgrade
    kept = StoredSession(
        token_hash("tok"), "ana", password_check("h"), "csrf", T0, T0 + timedelta(hours=1)
    )
    await store.start_session(kept, T0)
    assert await store.get_session(token_hash("tok"), T0) == kept
    assert (
        await store.count_sign_in([ThrottleKey("user:ana", 1)], T0, timedelta(minutes=15)) is None
    )


async def test_a_schema_14_sqlite_store_upgrades_to_keep_sign_ins(tmp_path: Path) -> None:
    path = tmp_path / "sendguard.db"
    sqlite_at_version(path, 14, [(_AUDIT, ())])
    store = SQLiteStore(path)
    await store.open()
    try:
        await _signs_in(store)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 15
        # The token is nowhere in the file, only its hash.
        assert conn.execute("SELECT token_hash FROM review_sessions").fetchall() == [
            (token_hash("tok"),)
        ]
    finally:
        conn.close()


@pytest.mark.postgres
async def test_a_schema_14_postgresql_store_upgrades_to_keep_sign_ins() -> None:
    schema = await postgres_at_version(14, [(_AUDIT, ())])
    store = PostgresStore(DSN, schema=schema, pool_size=2)
    try:
        await store.open()
        await _signs_in(store)
        await store.close()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            assert await conn.fetchval("SELECT max(version) FROM sendguard_schema") == len(
                PG_MIGRATIONS
            )
            assert await conn.fetchval("SELECT token_hash FROM review_sessions") == token_hash(
                "tok"
            )
        finally:
            await conn.close()
    finally:
        await store.close()
        await drop_schema(schema)
