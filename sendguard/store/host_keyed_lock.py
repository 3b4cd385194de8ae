"""Per-key mutual exclusion across the processes of one host (the workers sharing a SQLite file).

Each key maps to one byte of a lock file; a worker holds a key by holding a POSIX record lock
(`fcntl`) on that byte. Such locks belong to a process, not to a task, and one `unlock` ends
them whoever else in the process thought they held them — so inside a process the byte is
guarded first by a `KeyedLock` on the byte (two keys that share a byte then simply wait for each
other), and the record lock is taken by one task of the process at a time.

Taking the record lock never blocks the event loop: it is tried without waiting and retried
after a short, growing pause. The kernel drops every record lock of a process that dies, so a
worker killed with -9 leaves no key held.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from sendguard.store.keyed_lock import KeyedLock

# 2**40 bytes of address space: two keys share one with negligible odds, and the file itself
# stays empty (a record lock needs no data under it).
_SLOTS = 1 << 40
_FIRST_PAUSE = 0.0002
_LONGEST_PAUSE = 0.005


def slot(key: str) -> int:
    """The byte of the lock file that stands for `key`."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _SLOTS


class HostKeyedLock:
    """Locks by key, exclusive across every process that opens the same `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._local = KeyedLock()

    def open(self) -> None:
        """Open the lock file (created if missing)."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        """Close the lock file; releases every record lock this process holds on it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold every key; bytes are taken in ascending order, so two holders cannot deadlock."""
        slots = sorted({slot(key) for key in keys})
        async with self._local.hold(str(s) for s in slots):
            taken: list[int] = []
            try:
                for s in slots:
                    await self._take(s)
                    taken.append(s)
                yield
            finally:
                for s in reversed(taken):
                    fcntl.lockf(self._file(), fcntl.LOCK_UN, 1, s)

    def _file(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        return self._fd

    async def _take(self, offset: int) -> None:
        pause = _FIRST_PAUSE
        while True:
            try:
                fcntl.lockf(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except (BlockingIOError, PermissionError):  # EAGAIN, or EACCES on some systems
                await asyncio.sleep(pause)
            else:
                return
            pause = min(pause * 2, _LONGEST_PAUSE)
