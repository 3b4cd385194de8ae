"""A settings write whose caller is cancelled (a drain's cancellation, a timeout around the
handler) while its job waits in the writer's batch still commits ("the caller gave up waiting;
the write is committed all the same"). The kept pause must then be forgotten, and the shared
version moved, after that commit: a read in between would otherwise be kept at the new version
for good, and every worker would go on with the old pause (a stale kill switch). Found by the
session 16 review; both tests failed before `sqlite._to_its_end`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from sendguard.approvals import GlobalPause
from sendguard.store.sqlite import SQLiteStore, lock_for_workers
from tests.contract.test_store import T0


def committed_pause(db: Path) -> int | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT paused FROM global_pause").fetchone()
    finally:
        conn.close()
    return None if row is None else int(row[0])


async def test_a_cancelled_pause_write_leaves_no_worker_with_the_old_pause(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.db"
    held = lock_for_workers(SQLiteStore(db))
    assert held is not None
    reader = SQLiteStore(db, held_lock=os.dup(held))
    writer = SQLiteStore(db, held_lock=os.dup(held))
    try:
        await reader.open()
        await writer.open()
        assert (await reader.get_pause()).paused is False

        async def slow(tx: object) -> int:  # occupies the writer's thread a while
            time.sleep(0.4)
            return 0

        blocker = asyncio.create_task(writer._write(slow))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        pausing = asyncio.create_task(
            writer.set_pause(GlobalPause(paused=True, updated_at=T0, updated_by="ana"))
        )
        for _ in range(3):
            await asyncio.sleep(0)
        pausing.cancel()  # e.g. a drain's cancellation, a timeout around the handler
        # Decisions in both workers meanwhile (the write not yet committed).
        assert (await reader.get_pause()).paused is False
        assert (await writer.get_pause()).paused is False
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await pausing  # once the write's outcome is known
        assert committed_pause(db) == 1, "the cancelled caller's pause committed"
        # The database says paused; every later decision must see it.
        assert (await reader.get_pause()).paused is True, "sibling keeps the old pause"
        assert (await writer.get_pause()).paused is True, "writer keeps the old pause"
    finally:
        await reader.close()
        await writer.close()
        os.close(held)


async def test_alone_too_a_cancelled_pause_write_is_not_kept_stale(tmp_path: Path) -> None:
    # The same window with one process (it predates the shared version, which carried it
    # over to workers): the kept pause is forgotten in `set_pause`'s `finally`, before the
    # cancelled caller's write commits.
    db = tmp_path / "a.db"
    store = SQLiteStore(db)
    await store.open()
    try:
        assert (await store.get_pause()).paused is False

        async def slow(tx: object) -> int:
            time.sleep(0.4)
            return 0

        blocker = asyncio.create_task(store._write(slow))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        pausing = asyncio.create_task(store.set_pause(GlobalPause(paused=True, updated_at=T0)))
        for _ in range(3):
            await asyncio.sleep(0)
        pausing.cancel()
        assert (await store.get_pause()).paused is False  # a decision meanwhile
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await pausing
        assert committed_pause(db) == 1, "the cancelled caller's pause committed"
        assert (await store.get_pause()).paused is True, "the old pause is kept"
    finally:
        await store.close()
