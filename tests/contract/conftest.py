"""The store contract fixture: every test here runs against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from sendguard.store.base import Store
from sendguard.store.postgres import PostgresStore
from sendguard.store.sqlite import SQLiteStore
from tests.support.postgres import DSN, drop_schema, new_schema, reachable

# sqlite-scratch: the throwaway store of `sendguard simulate` keeps the same contract, only
# not durably.
BACKENDS = ["sqlite", "sqlite-scratch", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    schema = None
    if request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "store.db", busy_timeout=timedelta(seconds=1))
    elif request.param == "sqlite-scratch":
        backend = SQLiteStore(tmp_path / "scratch.db", scratch=True)
    else:
        problem = await reachable()
        if problem is not None:
            pytest.fail(problem)
        schema = new_schema()
        backend = PostgresStore(DSN, schema=schema, pool_size=4)
    await backend.open()
    yield backend
    await backend.close()
    if schema is not None:
        await drop_schema(schema)
