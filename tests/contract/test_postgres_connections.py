"""The PostgreSQL store's own connection pool (store/postgres_pool.py): a free connection is
reused as it is, a call that did not end cleanly never hands its connection on, the pool's
size bounds the connections, and a closed store opens none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from sendguard.errors import StoreUnavailable
from sendguard.store.postgres import PostgresStore
from tests.contract.test_postgres_pool import backend_pid
from tests.support.postgres import DSN, drop_schema, new_schema, reachable

pytestmark = pytest.mark.postgres


@pytest.fixture
async def one() -> AsyncIterator[PostgresStore]:
    """A store with one connection, which waits at most 0.5 s for it."""
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    schema = new_schema()
    store = PostgresStore(DSN, schema=schema, pool_size=1, timeout=0.5)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(schema)


async def alive(pid: int) -> bool:
    conn = await asyncpg.connect(DSN)
    try:
        found = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        return bool(found)
    finally:
        await conn.close()


async def sleeping(pid: int) -> bool:
    conn = await asyncpg.connect(DSN)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'"
            " AND query LIKE '%pg_sleep%'",
            pid,
        )
        return bool(found)
    finally:
        await conn.close()


async def test_a_free_connection_is_reused_and_a_refused_statement_keeps_it(
    one: PostgresStore,
) -> None:
    pid = await backend_pid(one)
    assert await backend_pid(one) == pid

    async def refused(tx: Any) -> None:
        await tx.fetch("SELECT 1 / 0")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await one._read(refused)
    assert await backend_pid(one) == pid  # the server answered: the connection is ready


async def test_a_call_cancelled_mid_statement_hands_its_connection_on_only_once_ended(
    one: PostgresStore,
) -> None:
    pid = await backend_pid(one)

    async def slow(tx: Any) -> None:
        await tx.fetch("SELECT pg_sleep(30)")

    call = asyncio.ensure_future(one._read(slow))
    await asyncio.sleep(0.3)  # the statement is running on the server
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    # The next call gets a connection that is not busy (one handed on as it was would
    # answer "another operation is in progress"), and the statement cut short has ended.
    assert await backend_pid(one) == pid
    assert not await sleeping(pid)


async def test_the_pool_size_bounds_the_connections_and_a_wait_ends_unavailable(
    one: PostgresStore,
) -> None:
    held = asyncio.Event()
    done = asyncio.Event()

    async def hold(tx: Any) -> None:
        await tx.fetch("SELECT 1")
        held.set()
        await done.wait()

    holder = asyncio.ensure_future(one._read(hold))
    await held.wait()
    # The only connection is in use: a call waits for it, and past the store's timeout
    # answers StoreUnavailable (451 / 503 at the ingresses).
    with pytest.raises(StoreUnavailable):
        await backend_pid(one)
    waiting = asyncio.ensure_future(backend_pid(one))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    done.set()
    await holder
    await waiting  # handed the released connection
    assert one._pool is not None and one._pool.size == 1


async def test_a_closed_store_opens_no_connection_and_ends_one_in_use() -> None:
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    schema = new_schema()
    store = PostgresStore(DSN, schema=schema, pool_size=2, timeout=0.5)
    await store.open()
    try:
        inside = asyncio.Event()
        closed = asyncio.Event()

        async def during_close(tx: Any) -> int:
            rows = await tx.fetch("SELECT pg_backend_pid()")
            inside.set()
            await closed.wait()
            return int(rows[0][0])

        call = asyncio.ensure_future(store._read(during_close))
        await inside.wait()
        await store.close()
        closed.set()
        pid = await call
        with pytest.raises(StoreUnavailable):
            await backend_pid(store)
        for _ in range(50):
            if not await alive(pid):
                break
            await asyncio.sleep(0.1)
        assert not await alive(pid)
    finally:
        await drop_schema(schema)
