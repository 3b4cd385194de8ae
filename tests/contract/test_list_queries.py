"""Listing a page costs the same few store queries however long the page is.

The real HTTP application in-process, over a real store (SQLite and PostgreSQL) that counts
every statement the shared SQL sends (reads, scans and writes alike).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sendguard.clock import SystemClock
from sendguard.config import HttpOptions
from sendguard.delivery.outbox import OutboxUpstream
from sendguard.engine import Engine
from sendguard.ingress.http import build_app
from sendguard.ingress.http_context import Api
from sendguard.intake import Intake
from sendguard.message import DeliveryState
from sendguard.metrics import Metrics
from sendguard.review import Review
from sendguard.store.postgres import PostgresStore
from sendguard.store.sql_store import Job, SqlStore, Tx
from sendguard.store.sqlite import SQLiteStore
from sendguard.tokens import TokenSet
from tests.contract.test_store import add
from tests.support.postgres import DSN, drop_schema, new_schema, reachable

T = TypeVar("T")
TOKEN = "list-queries-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class CountingTx:
    """A transaction that counts the statements sent through it."""

    def __init__(self, tx: Tx, store: Counting) -> None:
        self._tx, self._store = tx, store

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        self._store.statements += 1
        return await self._tx.execute(sql, args)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        self._store.statements += 1
        return await self._tx.fetch(sql, args)


class Counting(SqlStore):
    """Counts the statements of every job; mixed into a real backend."""

    statements = 0

    def _counted(self, job: Job[T]) -> Job[T]:
        async def counted(tx: Tx) -> T:
            # PostgreSQL's _scan runs as its _read: count each statement once
            return await job(tx if isinstance(tx, CountingTx) else CountingTx(tx, self))

        return counted

    async def _read(self, job: Job[T]) -> T:
        return await super()._read(self._counted(job))

    async def _scan(self, job: Job[T]) -> T:
        return await super()._scan(self._counted(job))

    async def _write(self, job: Job[T]) -> T:
        return await super()._write(self._counted(job))

    async def _write_one(self, job: Job[T]) -> T:
        return await super()._write_one(self._counted(job))


class CountingSQLite(Counting, SQLiteStore):
    pass


class CountingPostgres(Counting, PostgresStore):
    pass


CountingStore = CountingSQLite | CountingPostgres


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CountingStore]:
    store: CountingStore
    schema = None
    if request.param == "sqlite":
        store = CountingSQLite(tmp_path / "queries.db")
    else:
        if (problem := await reachable()) is not None:
            pytest.fail(problem)
        schema = new_schema()
        store = CountingPostgres(DSN, schema=schema, pool_size=4)
    await store.open()
    yield store
    await store.close()
    if schema is not None:
        await drop_schema(schema)


@pytest.fixture
async def client(store: CountingStore, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    clock, metrics = SystemClock(), Metrics()
    engine = Engine([], store, clock, metrics)
    context = Api(
        store,
        Intake(engine, store, clock, metrics, {}, lambda: None),
        Review(store, clock, on_release=lambda: None),
        OutboxUpstream(tmp_path / "outbox"),
        metrics,
        clock,
        lambda: None,
        HttpOptions(api_tokens=[TOKEN]),
    )
    async with TestClient(TestServer(build_app(context, TokenSet([("token-1", TOKEN)])))) as client:
        yield client


async def statements_for(client: TestClient[Any, Any], store: CountingStore, path: str) -> int:
    before = store.statements
    response = await client.get(path, headers=AUTH)
    assert response.status == 200, await response.text()
    await response.json()
    return store.statements - before


async def test_a_page_of_500_deliveries_costs_what_a_page_of_5_does(
    client: TestClient[Any, Any], store: CountingStore
) -> None:
    await add(store, DeliveryState.HELD, tuple(f"r{i}@example.org" for i in range(600)), None)

    small = await statements_for(client, store, "/v1/deliveries?limit=5")
    large = await statements_for(client, store, "/v1/deliveries?limit=500")
    body = await (await client.get("/v1/deliveries?limit=500", headers=AUTH)).json()
    assert len(body["deliveries"]) == 500
    assert all(len(d["transitions"]) == 1 and len(d["reasons"]) == 2 for d in body["deliveries"])
    assert large == small
    assert large <= 3  # the page; the transitions and the outcomes of all of it


async def test_a_message_with_500_deliveries_costs_what_one_with_5_does(
    client: TestClient[Any, Any], store: CountingStore
) -> None:
    big, _ = await add(store, DeliveryState.HELD, tuple(f"b{i}@example.org" for i in range(500)))
    small, _ = await add(store, DeliveryState.HELD, tuple(f"s{i}@example.org" for i in range(5)))

    few = await statements_for(client, store, f"/v1/messages/{small.id}")
    many = await statements_for(client, store, f"/v1/messages/{big.id}")
    body = await (await client.get(f"/v1/messages/{big.id}", headers=AUTH)).json()
    assert len(body["deliveries"]) == 500
    assert many == few
    assert many <= 4  # the message; its deliveries; their transitions and outcomes


async def test_a_timeline_page_costs_the_same_however_long(
    client: TestClient[Any, Any], store: CountingStore
) -> None:
    for _ in range(60):
        await add(store, DeliveryState.HELD, ("often@example.org",), None)

    short = await statements_for(client, store, "/v1/recipients/often@example.org/timeline?limit=5")
    long = await statements_for(client, store, "/v1/recipients/often@example.org/timeline?limit=50")
    assert long == short
