"""Schema 16 keeps a resend key on deliveries (the resend check, sendguard/resend.py): a store
written at schema 15 upgrades, on SQLite and on PostgreSQL, keeps its deliveries (which have no
key: never taken for a copy), and then finds the copies of a message kept with its key."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from sendguard.resend import CopyQuery
from sendguard.store.base import Store
from sendguard.store.postgres import PostgresStore
from sendguard.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from sendguard.store.sqlite import SQLiteStore
from sendguard.store.sqlite_schema import MIGRATIONS
from tests.contract.test_earlier_copies import add_keyed
from tests.contract.test_store import T0
from tests.support.postgres import DSN, drop_schema, postgres_at_version
from tests.support.sqlite_versions import sqlite_at_version

KEY = 4711
_MESSAGE = (
    "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
    " campaign, class, size, content_hash, content)"
    " VALUES ('m-old', {at}, 'smtp', 'shop@example.com', '[\"ann@example.org\"]', '[]', '{{}}',"
    " NULL, 'marketing', 5, 'h', 'x')"
)
_DELIVERY = (
    "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, state,"
    " created_at, updated_at) VALUES ('d-old', 'm-old', 'ann@example.org', 'ann@example.org',"
    " 'example.org', 'sent', {at}, {at})"
)
_AT = int((T0 - timedelta(hours=1)).timestamp() * 1_000_000)


async def _finds_copies(store: Store) -> None:
    query = CopyQuery(KEY, T0 - timedelta(days=1))
    assert [d.id for d in await store.deliveries_of("m-old")] == ["d-old"]  # kept
    assert await store.earlier_copies("ann@example.org", query) == []  # no key: no copy
    (new,) = await add_keyed(store, ("ann@example.org",), KEY)
    assert [c.delivery_id for c in await store.earlier_copies("ann@example.org", query)] == [new.id]


async def test_a_schema_15_sqlite_store_upgrades_to_find_copies(tmp_path: Path) -> None:
    path = tmp_path / "sendguard.db"
    sqlite_at_version(path, 15, [(_MESSAGE.format(at=_AT), ()), (_DELIVERY.format(at=_AT), ())])
    store = SQLiteStore(path)
    await store.open()
    try:
        await _finds_copies(store)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 16
        assert conn.execute("SELECT resend_key FROM deliveries WHERE id = 'd-old'").fetchone() == (
            None,
        )
    finally:
        conn.close()


@pytest.mark.postgres
async def test_a_schema_15_postgresql_store_upgrades_to_find_copies() -> None:
    schema = await postgres_at_version(
        15,
        [
            (_MESSAGE.format(at=_AT).replace("'x')", "'x'::bytea)"), ()),
            (_DELIVERY.format(at=_AT), ()),
        ],
    )
    store = PostgresStore(DSN, schema=schema, pool_size=2)
    try:
        await store.open()
        await _finds_copies(store)
        await store.close()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            assert await conn.fetchval("SELECT max(version) FROM sendguard_schema") == len(
                PG_MIGRATIONS
            )
            # The key is 64 bits wide on PostgreSQL too (BIGINT, as SQLite's INTEGER).
            await conn.execute("UPDATE deliveries SET resend_key = $1", -(2**63))
        finally:
            await conn.close()
    finally:
        await store.close()
        await drop_schema(schema)
