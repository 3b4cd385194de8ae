"""The store contract fixture: every test here runs against every installed backend.

Backends are found through the `sendguard.stores` entry points, so a backend installed from
another distribution (tests/store_pkg) runs the whole suite without a change here. A backend
registered under several schemes (postgresql, postgres) runs once; each builds its own fresh
storage with `scratch`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from sendguard.store import installed_backends, load_backend
from sendguard.store.base import Store
from sendguard.store.sqlite import SQLiteStore


def _backends() -> list[object]:
    by_target: dict[str, str] = {}
    for scheme, entry in sorted(installed_backends().items()):
        by_target.setdefault(entry.value, scheme)
    # The PostgreSQL server is a machine dependency: `-m "not postgres"` leaves it out.
    return [
        pytest.param(s, marks=pytest.mark.postgres) if s.startswith("postgres") else s
        for s in sorted(by_target.values())
    ]


# The throwaway store of `sendguard simulate` (SQLiteStore(scratch=True)) keeps the same
# contract, only not durably.
SIMULATE_SCRATCH = "sqlite (simulate's scratch)"
BACKENDS = [*_backends(), SIMULATE_SCRATCH]


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    directory = tmp_path_factory.mktemp("store")
    if request.param == SIMULATE_SCRATCH:
        scratch = SQLiteStore(directory / "scratch.db", scratch=True)
        await scratch.open()
        try:
            yield scratch
        finally:
            await scratch.close()
        return
    backend = load_backend(request.param)
    async with backend.scratch(directory, os.environ) as fresh:
        await fresh.open()
        try:
            yield fresh
        finally:
            await fresh.close()
