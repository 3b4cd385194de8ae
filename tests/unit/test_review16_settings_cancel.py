"""Review 16: a settings write whose caller is cancelled commits after the version moved.

`SettingsVersion.writing()` makes the version even and new in its `finally`. When the caller
of `set_pause` is cancelled while its write waits in the writer's batch, the `finally` runs at
once, but `SQLiteDatabase.write` still commits the job later ("the caller gave up waiting; the
write is committed all the same"). A read between the two is kept at the new version, and
nothing moves the version again: the worker keeps the old pause (a stale kill switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from pathlib import Path

from sendguard.approvals import GlobalPause
from sendguard.store.sqlite import SQLiteStore, lock_for_workers
from tests.contract.test_store import T0


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
        with contextlib.suppress(asyncio.CancelledError):
            await pausing
        # A decision in the sibling worker now (the write not yet committed).
        assert (await reader.get_pause()).paused is False
        await blocker
        for _ in range(100):  # the cancelled caller's write commits all the same
            row = sqlite3.connect(db).execute("SELECT paused FROM global_pause").fetchone()
            if row and row[0]:
                break
            await asyncio.sleep(0.02)
        assert row is not None and row[0] == 1, "the pause committed"
        # The database says paused; every later decision must see it.
        assert (await reader.get_pause()).paused is True, "sibling keeps the old pause"
        assert (await writer.get_pause()).paused is True, "writer keeps the old pause"
    finally:
        await reader.close()
        await writer.close()
        os.close(held)
