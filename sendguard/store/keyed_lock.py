"""Per-key mutual exclusion inside one process (used to serialise decisions per recipient)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class KeyedLock:
    """Locks by key; entries disappear when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold every key; keys are taken in sorted order, so two holders cannot deadlock."""
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                lock, users = self._locks.get(key, (asyncio.Lock(), 0))
                self._locks[key] = (lock, users + 1)
                taken.append(key)
                await lock.acquire()
            yield
        finally:
            for key in reversed(taken):
                lock, users = self._locks[key]
                if lock.locked():
                    lock.release()
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)
