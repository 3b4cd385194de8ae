"""Schema 17 keeps `history.sent` right (a trigger sets it when the delivery enters `sent`), so
the recipient read needs no join to `deliveries`: a store written at schema 16 upgrades, on
SQLite and on PostgreSQL, reads each send as made or reserved exactly as schema 16's join did
(its delivery `sent` or gone: made; queued, being sent, failed: reserved), and a send made after
the upgrade reads as made."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from sendguard.deliveries import Change
from sendguard.message import DeliveryState
from sendguard.store.base import Store
from sendguard.store.postgres import PostgresStore
from sendguard.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from sendguard.store.sql_history import recipient_reads_query
from sendguard.store.sqlite import SQLiteStore
from sendguard.store.sqlite_schema import MIGRATIONS
from tests.contract.test_store import T0
from tests.support.postgres import DSN, drop_schema, postgres_at_version
from tests.support.sqlite_versions import sqlite_at_version

_AT = int((T0 - timedelta(hours=1)).timestamp() * 1_000_000)
_MESSAGE = (
    "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
    " campaign, class, size, content_hash, content)"
    f" VALUES ('m-old', {_AT}, 'smtp', 'shop@example.com', '[\"ann@example.org\"]', '[]', '{{}}',"
    " NULL, 'marketing', 5, 'h', 'x')"
)
# Deliveries in each state a send's history row can have, as schema 9 to 16 wrote them: the
# row's `sent` 0 whatever the state (the read joined the delivery's state). `d-gone`'s delivery
# was pruned when done; `d-failed` is one a store before the release at `failed` kept.
_STATES = {"d-sent": "sent", "d-queued": "queued", "d-sending": "sending", "d-failed": "failed"}
_DELIVERIES = [
    "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, state,"
    f" created_at, updated_at) VALUES ('{delivery}', 'm-old', 'ann@example.org',"
    f" 'ann@example.org', 'example.org', '{state}', {_AT}, {_AT})"
    for delivery, state in _STATES.items()
]
_HISTORY = [
    "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class, content_hash,"
    f" at, sent) VALUES ('{delivery}', 'ann@example.org', 'example.org', NULL, 'marketing',"
    f" 'h', {_AT + i}, 0)"
    for i, delivery in enumerate([*_STATES, "d-gone"])
]
SCHEMA_16_READ = {
    "d-sent": True,
    "d-queued": False,
    "d-sending": False,
    "d-failed": False,
    "d-gone": True,
}
"""What schema 16's read (`h.sent = 1 OR d.state IS NULL OR d.state = 'sent'` over the join)
answers for these rows."""
_OLD_SENT = (
    "SELECT h.delivery_id, CASE WHEN h.sent = 1 OR d.state IS NULL OR d.state = 'sent'"
    " THEN 1 ELSE 0 END FROM history h LEFT JOIN deliveries d ON d.id = h.delivery_id"
)


async def _reads_as_before(store: Store) -> None:
    since = T0 - timedelta(days=1)
    reads = await store.recipient_reads("ann@example.org", history_since=since, events_since=None)
    assert {h.delivery_id: h.sent for h in reads.history} == SCHEMA_16_READ
    history = await store.history("ann@example.org", since)
    assert {h.delivery_id: h.sent for h in history} == SCHEMA_16_READ
    # A send made after the upgrade: the trigger marks it.
    await store.change("d-queued", Change(DeliveryState.SENT, "250 ok", T0))
    reads = await store.recipient_reads("ann@example.org", history_since=since, events_since=None)
    assert {h.delivery_id: h.sent for h in reads.history} == {**SCHEMA_16_READ, "d-queued": True}


async def test_a_schema_16_sqlite_store_upgrades_and_reads_its_sends_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sendguard.db"
    sqlite_at_version(path, 16, [(sql, ()) for sql in [_MESSAGE, *_DELIVERIES, *_HISTORY]])
    conn = sqlite3.connect(path)
    before = {d: bool(s) for d, s in conn.execute(_OLD_SENT)}
    conn.close()
    assert before == SCHEMA_16_READ
    store = SQLiteStore(path)
    await store.open()
    try:
        await _reads_as_before(store)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 17
        # The recipient read's sends are the covering index alone: no descent into `deliveries`.
        sql, args = recipient_reads_query("ann@example.org", T0 - timedelta(days=1), None)
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
        assert "SEARCH h USING COVERING INDEX history_recipient (recipient_key=? AND at>?)" in plan
        assert not [step for step in plan if "deliveries" in step], plan
    finally:
        conn.close()


@pytest.mark.postgres
async def test_a_schema_16_postgresql_store_upgrades_and_reads_its_sends_as_before() -> None:
    schema = await postgres_at_version(
        16,
        [
            (_MESSAGE.replace("'x')", "'x'::bytea)"), ()),
            *((sql, ()) for sql in _DELIVERIES),
            *((sql, ()) for sql in _HISTORY),
        ],
    )
    store = PostgresStore(DSN, schema=schema, pool_size=2)
    try:
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            before = {d: bool(s) for d, s in await conn.fetch(_OLD_SENT)}
        finally:
            await conn.close()
        assert before == SCHEMA_16_READ
        await store.open()
        await _reads_as_before(store)
        await store.close()
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            assert await conn.fetchval("SELECT max(version) FROM sendguard_schema") == len(
                PG_MIGRATIONS
            )
        finally:
            await conn.close()
    finally:
        await store.close()
        await drop_schema(schema)
