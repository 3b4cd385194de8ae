"""The store contract fixture: every test here runs against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from sendguard.store.base import Store
from sendguard.store.sqlite import SQLiteStore

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "store.db", busy_timeout=timedelta(seconds=1))
    else:  # pragma: no cover - a new backend must be wired here
        raise AssertionError(request.param)
    await backend.open()
    yield backend
    await backend.close()
