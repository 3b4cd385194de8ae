"""The PostgreSQL store's connections: a pool that costs nothing when a connection is free.

asyncpg's `Pool` runs each release in a task of its own (`asyncio.shield`, so that a cancelled
caller still returns the connection) and each acquire with a timeout through `wait_for`: about
150,000 instructions of the event loop's thread per store call, three times what the statement
itself costs the client (`docs/performance.md`, "The store's own pool", session 14). Here a free
connection is handed out and taken back without a task, a timer or a wait; only what needs the
server (opening a connection, undoing what a call left on one) awaits anything.

What a connection keeps between calls is what asyncpg's pool kept with the store's `reset`: no
transaction (a managed one ends with its block), no cursor, no LISTEN, no setting, and no
advisory lock once `reset` ran for a connection the store says may hold one. A connection whose
call ended in anything but a statement's own error (a cancelled read, a timeout) gets
asyncpg's full reset first, which waits for the server to end the statement cut short, as
asyncpg's pool did; one that fails it, or that was lost, is terminated, and the next caller
gets a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import asyncpg


class ConnectionPool:
    """Up to `max_size` connections made by `connect`, each waited for at most `wait` seconds
    (then TimeoutError); `reset` undoes a call's leftovers on those `needs_reset` names
    before they are handed out again."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        max_size: int,
        wait: float,
        needs_reset: Callable[[asyncpg.Connection], bool],
        reset: Callable[[asyncpg.Connection], Awaitable[None]],
    ) -> None:
        self._connect = connect
        self._max_size = max_size
        self._wait = wait
        self._needs_reset = needs_reset
        self._reset = reset
        self._idle: list[asyncpg.Connection] = []
        self._size = 0
        """Connections open, being opened, or in use."""
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        """Callers waiting, first first: each is handed a released connection, or None when a
        place became free (then it opens one)."""
        self._closing = False

    @property
    def size(self) -> int:
        """Connections open or being opened (in use or idle)."""
        return self._size

    async def acquire(self) -> asyncpg.Connection:
        """A free connection at once, else a new one (up to `max_size`), else the next one
        released."""
        if self._closing:
            raise asyncpg.InterfaceError("the store's connections are closing")
        if not self._waiters:
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return conn
                self._size -= 1
        async with asyncio.timeout(self._wait):
            return await self._wait_or_connect()

    async def _wait_or_connect(self) -> asyncpg.Connection:
        while True:
            if self._closing:
                raise asyncpg.InterfaceError("the store's connections are closing")
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return conn
                self._size -= 1
            if self._size < self._max_size:
                self._size += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self._size -= 1
                    self._wake()
                    raise
                if self._closing:
                    self._size -= 1
                    conn.terminate()
                    raise asyncpg.InterfaceError("the store's connections are closing")
                return conn
            handed = await self._turn()
            if handed is not None:
                if not handed.is_closed():
                    return handed
                self._size -= 1  # lost while handed over: its place is free

    async def _turn(self) -> asyncpg.Connection | None:
        """Wait in line: a connection released, or None when a place became free."""
        waiter: asyncio.Future[asyncpg.Connection | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed something, but leaving (cancelled, timed out): pass it on.
                handed = waiter.result()
                if handed is None:
                    self._wake()
                else:
                    self._put(handed)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _wake(self, conn: asyncpg.Connection | None = None) -> bool:
        """Hand `conn` (None: a free place) to the first waiter; False if none waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _put(self, conn: asyncpg.Connection) -> None:
        """A ready connection to the first waiter, else to the free ones."""
        if not self._wake(conn):
            self._idle.append(conn)

    async def release(self, conn: asyncpg.Connection, *, failed: BaseException | None) -> None:
        """Take `conn` back after a call that raised `failed` (None: it returned)."""
        if self._closing or conn.is_closed():
            self._drop(conn)
            return
        settled = _settled(conn, failed)
        if not settled or self._needs_reset(conn):
            # Needs the server: in a task of its own, so a cancelled caller still finishes it.
            await asyncio.shield(asyncio.ensure_future(self._reset_and_put(conn, settled)))
            return
        self._put(conn)

    async def _reset_and_put(self, conn: asyncpg.Connection, settled: bool) -> None:
        try:
            if not settled:
                # asyncpg's full reset: it waits for the cancellation of a statement cut
                # short to end on the server, rolls back, and ends session state and locks.
                await conn.reset(timeout=self._wait)
            await self._reset(conn)
        except BaseException:
            self._drop(conn)
            raise
        if self._closing:
            self._drop(conn)
            return
        self._put(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        conn.terminate()
        self._size -= 1
        self._wake()

    async def close(self) -> None:
        """Close the free connections; those in use are terminated when they come back."""
        self._closing = True
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # to find the pool closing
        self._waiters.clear()
        for conn in idle:
            try:
                await asyncio.wait_for(conn.close(), self._wait)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


def _settled(conn: asyncpg.Connection, failed: BaseException | None) -> bool:
    """Whether `conn` is idle and clean after its call: it returned, or the server refused a
    statement (the connection answered and is ready), or sendguard's own code raised between
    statements; not after a cancellation or a timeout (a statement may still be running on
    the server), nor in an open transaction."""
    if failed is not None and not isinstance(failed, asyncpg.PostgresError):
        if isinstance(failed, asyncio.CancelledError | TimeoutError | OSError):
            return False
        if type(failed).__module__.startswith("asyncpg."):  # the client's own: not ready
            return False
    return not conn.is_in_transaction()
