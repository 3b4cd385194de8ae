"""SQLite specifics: group commit and single-instance ownership of the file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sendguard.errors import StoreLocked
from sendguard.store.sqlite import SQLiteStore
from tests.contract.test_store import add


async def test_writes_are_group_committed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await store.open()
    try:
        before = store.stats
        await asyncio.gather(*(add(store, recipients=(f"g{i}@example.org",)) for i in range(50)))
        after = store.stats
        assert after.writes - before.writes == 50
        assert after.commits - before.commits < 50
    finally:
        await store.close()


async def test_a_second_process_cannot_open_the_same_file(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "one.db")
    await first.open()
    try:
        with pytest.raises(StoreLocked):
            await SQLiteStore(tmp_path / "one.db").open()
    finally:
        await first.close()
