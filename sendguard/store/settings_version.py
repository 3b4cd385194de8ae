"""The version of the settings every decision reads (the global pause, campaign decisions,
content approvals), shared by the workers of one host that share a SQLite file.

A worker alone keeps those rows in memory once read: only it writes them. Workers may write
them for each other, so until now each decision read all three from the database again.
Instead every worker maps one 8-byte file, a sequence lock:

- A write of those settings makes the version odd before its transaction and even, and new,
  after it, whether it committed or not, holding a record lock on the file throughout (one
  writer at a time across the workers; in a process, an asyncio lock as well).
- A reader keeps what it read at an even version while the version stays that number. At an
  odd version (a write in flight, or a worker that died in one) it keeps nothing and reads
  the database every time.
- A worker that opens the file and finds it odd with no writer holding the lock makes it even:
  the dead writer's transaction is over, committed or rolled back, and what is read from then
  on is what the database holds.

So a change is seen by every worker before its writer answers (the version is new before
`set_pause` returns), and a writer killed between its commit and its second step leaves every
worker reading the database, never a row kept from before.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_SIZE = 8
_FIRST_PAUSE = 0.0002
_LONGEST_PAUSE = 0.005


class SettingsVersion:
    """The shared version of the settings in the file `path` (created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._value: memoryview | None = None
        self._local = asyncio.Lock()

    def open(self) -> None:
        """Map the file, and settle a version a dead writer left odd."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros: version 0, even
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._value = memoryview(self._map).cast("Q")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return  # a writer is at work: its second step makes the version even
        try:
            if self._value[0] & 1:
                self._value[0] += 1
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap and close the file."""
        if self._value is not None:
            self._value.release()
            self._value = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def opened(self) -> bool:
        """Whether the file is mapped (between `open` and `close`)."""
        return self._value is not None

    def current(self) -> int | None:
        """The version, or None while it is odd (what is read then must not be kept)."""
        if self._value is None:
            return None
        version: int = self._value[0]
        return None if version & 1 else version

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold the writers' lock around a write of the settings: the version is odd inside,
        and even and new once the block is left, however it is left."""
        async with self._local:
            fd, value = self._open()
            pause = _FIRST_PAUSE
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except (BlockingIOError, PermissionError):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _LONGEST_PAUSE)
            try:
                # Odd, and a number no reader has kept anything at (a dead writer's odd one
                # is passed by two).
                value[0] += 1 if value[0] % 2 == 0 else 2
                try:
                    yield
                finally:
                    value[0] += 1
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def _open(self) -> tuple[int, memoryview]:
        if self._fd is None or self._value is None:
            raise RuntimeError(f"{self.path} is not open")
        return self._fd, self._value
