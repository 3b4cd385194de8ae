"""PostgreSQL refuses writes (its disk is full, an I/O error, a read-only standby): the write
fails with StoreUnavailable of that kind, and `check` (readiness) fails with the cause until
the server takes writes again. The refusals are the server's own, raised by a trigger with
the SQLSTATE a full disk or a standby gives (filling the shared server's disk is not an option)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from sendguard.errors import StoreUnavailable
from sendguard.store.postgres import PostgresStore
from tests.contract.test_store import add
from tests.support.postgres import DSN, open_store

pytestmark = pytest.mark.postgres

REFUSE = """
CREATE TABLE refuse (code TEXT NOT NULL);
CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    refused TEXT := (SELECT code FROM refuse LIMIT 1);
BEGIN
    IF refused IS NOT NULL THEN
        RAISE EXCEPTION 'refused for the test' USING ERRCODE = refused;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_messages BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION refuse_writes();
CREATE TRIGGER refuse_schema BEFORE UPDATE ON sendguard_schema
    FOR EACH ROW EXECUTE FUNCTION refuse_writes();
"""


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with open_store(pool_size=2) as opened:
        yield opened


async def refuse(store: PostgresStore, code: str | None) -> None:
    conn = await asyncpg.connect(DSN, server_settings={"search_path": store._schema})
    try:
        if code is None:
            await conn.execute("DELETE FROM refuse")
        else:
            await conn.execute("INSERT INTO refuse VALUES ($1)", code)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("sqlstate", "kind", "says"),
    [
        ("53100", "disk_full", "disk is full"),
        ("58030", "io_error", "I/O error"),
        ("25006", "read_only", "refuses writes"),
    ],
)
async def test_a_refused_write_fails_readiness_with_its_cause_until_writes_work(
    store: PostgresStore, sqlstate: str, kind: str, says: str
) -> None:
    conn = await asyncpg.connect(DSN, server_settings={"search_path": store._schema})
    try:
        await conn.execute(REFUSE)
    finally:
        await conn.close()
    await add(store, recipients=("before@example.org",))
    await store.check()

    await refuse(store, sqlstate)
    with pytest.raises(StoreUnavailable) as refused:
        await add(store, recipients=("refused@example.org",))
    assert refused.value.kind == kind
    for _ in range(2):  # the check's own write is refused too: still not ready
        with pytest.raises(StoreUnavailable, match=says) as checked:
            await store.check()
        assert checked.value.kind == kind

    await refuse(store, None)
    await store.check()  # its own write went through: ready again, before any message
    await add(store, recipients=("after@example.org",))
    await store.check()
