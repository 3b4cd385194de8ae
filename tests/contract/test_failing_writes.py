"""A write that raises, whatever it raises, fails alone; the store keeps working (every
backend)."""

from __future__ import annotations

import asyncio

import pytest

from sendguard.facts import Fact
from sendguard.store.base import Store
from sendguard.store.sql_store import SqlStore, Tx
from tests.contract.test_store import T0


async def test_a_write_that_raises_fails_alone_and_leaves_nothing_behind(store: Store) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("injects a raw SQL job: applies to backends built on SqlStore")

    async def broken(tx: Tx) -> None:
        await tx.execute(
            "INSERT INTO facts (key, contact, value, observed_at) VALUES ('half', '', 'x', 0)"
        )
        raise KeyError("a bug in a job")

    fact = Fact("meeting:1:status", "completed", T0)
    async with asyncio.timeout(10):
        results = await asyncio.gather(
            store._write(broken), store.put_fact(fact), return_exceptions=True
        )
        assert isinstance(results[0], KeyError)
        assert results[1] is None
        later = Fact("meeting:2:status", "cancelled", T0)
        await store.put_fact(later)
        await store.check()
    assert await store.get_fact("meeting:1:status") == fact
    assert await store.get_fact("meeting:2:status") == later
    assert await store.get_fact("half") is None
