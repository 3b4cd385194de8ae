"""The PostgreSQL server on this machine, one fresh schema per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
import pytest

from sendguard.store.postgres import PostgresStore, numbered, scratch_dsn
from sendguard.store.postgres_schema import MIGRATIONS

# The same server the PostgreSQL backend's scratch stores use (the contract suite).
DSN = scratch_dsn(os.environ)


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def drop_schema_sync(schema: str) -> None:
    asyncio.run(drop_schema(schema))


async def reachable() -> str | None:
    """None if the server answers, else why not."""
    try:
        conn = await asyncpg.connect(DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {DSN} is not reachable: {exc} (make test starts it)"
    await conn.close()
    return None


@asynccontextmanager
async def open_store(pool_size: int) -> AsyncIterator[PostgresStore]:
    """An open PostgreSQL store on a fresh schema of the server, dropped after."""
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    schema = new_schema()
    opened = PostgresStore(DSN, schema=schema, pool_size=pool_size)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        await drop_schema(schema)


async def postgres_at_version(
    version: int, rows: Sequence[tuple[str, Sequence[object]]] = ()
) -> str:
    """A fresh schema of the server made by the first `version` PostgreSQL migrations, as a
    sendguard of that schema left it (its version table included), with `rows` written (SQL
    with `?` placeholders and their arguments): the start of an upgrade test. Returns its name;
    the caller drops it."""
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    schema = new_schema()
    conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        for migration in MIGRATIONS[:version]:
            await conn.execute(migration)
        await conn.execute("CREATE TABLE sendguard_schema (version BIGINT NOT NULL)")
        await conn.executemany(
            "INSERT INTO sendguard_schema VALUES ($1)", [(v,) for v in range(1, version + 1)]
        )
        for sql, args in rows:
            await conn.execute(numbered(sql), *args)
    finally:
        await conn.close()
    return schema
