"""Per-key mutual exclusion inside one process (used to serialise decisions per recipient)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType


class KeyedLock:
    """Locks by key; entries disappear when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def hold(self, keys: Iterable[str]) -> AbstractAsyncContextManager[None]:
        """Hold every key; keys are taken in sorted order, so two holders cannot deadlock."""
        return _Holding(self._locks, keys)


class _Holding(AbstractAsyncContextManager[None]):
    """One `hold`: the keys taken on entry, given back on exit.

    A class, not an `asynccontextmanager` generator: every decision and every send holds
    its recipient's key, and the generator's frames and wrapper cost several thousand
    instructions each time. A holder cancelled while it waits gives back what it took and
    leaves the key it waited for to whoever holds it.
    """

    __slots__ = ("_acquired", "_keys", "_locks", "_registered")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], keys: Iterable[str]) -> None:
        self._locks = locks
        self._keys = keys
        self._registered: list[str] = []  # counted as users of the key
        self._acquired = 0  # of those, how many (the first ones) are held

    async def __aenter__(self) -> None:
        locks = self._locks
        try:
            for key in sorted(set(self._keys)):
                entry = locks.get(key)
                lock, users = entry if entry is not None else (asyncio.Lock(), 0)
                locks[key] = (lock, users + 1)
                self._registered.append(key)
                await lock.acquire()
                self._acquired += 1
        except BaseException:
            self._give_back()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._give_back()

    def _give_back(self) -> None:
        locks = self._locks
        registered, self._registered = self._registered, []
        for index in range(len(registered) - 1, -1, -1):
            key = registered[index]
            lock, users = locks[key]
            if index < self._acquired:
                lock.release()
            if users <= 1:
                del locks[key]
            else:
                locks[key] = (lock, users - 1)
        self._acquired = 0
