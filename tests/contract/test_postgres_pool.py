"""What a pooled PostgreSQL connection keeps between store calls: no advisory lock.

asyncpg's own reset (four statements on every release) is replaced by the store's, which
unlocks only a connection whose recipients' unlock did not complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from sendguard.store.postgres import PostgresStore
from tests.support.postgres import DSN, drop_schema, new_schema, reachable

pytestmark = pytest.mark.postgres


@pytest.fixture
async def traced() -> AsyncIterator[tuple[PostgresStore, list[str]]]:
    """A store with one pooled connection, every statement it sends listed."""
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    schema = new_schema()
    sent: list[str] = []
    store = PostgresStore(DSN, schema=schema, pool_size=1, trace=sent.append)
    await store.open()
    try:
        yield store, sent
    finally:
        await store.close()
        await drop_schema(schema)


async def backend_pid(store: PostgresStore) -> int:
    async def job(tx: Any) -> Sequence[Any]:
        return await tx.fetch("SELECT pg_backend_pid()")

    rows = await store._read(job)
    return int(rows[0][0])


async def advisory_locks(pid: int) -> int:
    conn = await asyncpg.connect(DSN)
    try:
        found = await conn.fetchval(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
        )
        return int(found)
    finally:
        await conn.close()


async def test_recipients_locks_end_with_the_block_and_nothing_else_is_sent(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    pid = await backend_pid(store)
    sent.clear()

    async with store.lock_recipients(["b@example.org", "a@example.org"]):
        assert await advisory_locks(pid) == 2
    await backend_pid(store)

    assert await advisory_locks(pid) == 0
    # Two locks, the unlock, the read: no reset statements on release.
    assert sent == [
        "SELECT pg_advisory_lock($1)",
        "SELECT pg_advisory_lock($1)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT pg_backend_pid()",
    ]


async def test_a_connection_whose_unlock_did_not_complete_is_unlocked_on_release(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, _ = traced
    pid = await backend_pid(store)

    async def job(tx: Any) -> None:
        # As lock_recipients does before locking; its unlock never runs here.
        store._may_hold_locks.add(pid)
        await tx.fetch("SELECT pg_advisory_lock(42)")

    await store._read(job)

    assert await advisory_locks(pid) == 0
    assert await backend_pid(store) == pid  # the same connection, kept
