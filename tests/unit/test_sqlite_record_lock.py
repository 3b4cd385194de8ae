"""The workers sharing a SQLite file take turns at writing through a record lock: one kept by
another worker past `store.busy_timeout` fails the batch waiting for it, and only that batch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sendguard.errors import StoreUnavailable
from sendguard.store import open_store
from sendguard.store.sqlite import SQLiteStore, lock_for_workers
from tests.contract.test_store import add

# Holds the workers' record lock (byte 0 of the lock file) in another process, as a sibling
# worker's writer does while it commits, until its stdin closes.
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
print("held", flush=True)
sys.stdin.read()
"""


def _hold(lock_file: Path) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"held\n"
    return holder


def _release(holder: subprocess.Popen[bytes]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    holder.wait(20)
    holder.stdout.close()


async def test_a_lock_kept_past_the_busy_timeout_fails_the_batch_and_the_next_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    held = lock_for_workers(open_store(f"sqlite:///{path}"))
    assert held is not None
    store = SQLiteStore(path, busy_timeout=timedelta(seconds=0.3), held_lock=os.dup(held))
    await store.open()
    try:
        holder = _hold(path.with_name(path.name + ".lock"))
        try:
            refused = asyncio.create_task(add(store, recipients=("a@example.org",)))
            done, _ = await asyncio.wait({refused}, timeout=20)
            assert done
            error = refused.exception()
            assert isinstance(error, StoreUnavailable)
            assert "stayed locked by another worker" in str(error)
        finally:
            _release(holder)
        message, _ = await asyncio.wait_for(add(store, recipients=("b@example.org",)), 20)
        assert await store.get_message(message.id) == message
    finally:
        await store.close()
        os.close(held)
