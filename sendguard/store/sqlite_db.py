"""One SQLite database served by one thread, with group commit.

All database work runs on a dedicated thread. Writes are queued and committed in batches:
while one batch is being fsynced, the next one collects, so durability costs one fsync per
batch, not per message. Each write runs in its own savepoint, so one failing write does not
fail the others in its batch; a failure of the database itself (locked, I/O) fails the batch.
A lock file keeps a second process from opening the same database.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sendguard.errors import Conflict, StoreLocked, StoreUnavailable
from sendguard.store.sqlite_schema import migrate

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


@dataclass
class _Failed:
    error: Exception


class SQLiteDatabase:
    """The connection, its thread and the group-commit writer."""

    def __init__(self, path: Path, busy_timeout: timedelta) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._pending: list[tuple[Job, asyncio.Future[Any]]] = []
        self._has_work = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.writes = 0
        self.commits = 0

    async def open(self) -> None:
        """Take the file lock, connect, migrate, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_file_lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sendguard-sqlite")
        try:
            await self._run(lambda _: self._connect())
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            self._release_file_lock()
            raise
        try:
            self._reader = self._open_reader()
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-group-commit")

    def _open_reader(self) -> sqlite3.Connection:
        # Reads run on the event loop's own thread: an indexed read takes microseconds, far
        # less than a hop to the database thread, and in WAL mode readers never wait for the
        # writer. Reads see every committed batch.
        reader = sqlite3.connect(
            f"file:{self.path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout.total_seconds(),
        )
        reader.execute("PRAGMA query_only = ON")
        return reader

    def _take_file_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(
                f"{self.path} is in use by another sendguard process; SQLite serves one "
                "instance (stop the other one, or use a PostgreSQL store.url for several)"
            ) from None
        self._lock_fd = fd

    def _release_file_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self) -> None:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout.total_seconds(),
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except (sqlite3.Error, RuntimeError) as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._conn = conn

    async def close(self) -> None:
        """Commit what is pending, close the connection, release the file lock."""
        self._closing = True
        self._has_work.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._executor is not None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
            self._executor.shutdown(wait=True)
            self._executor = None
        self._release_file_lock()

    async def _run(self, fn: Callable[[sqlite3.Connection | None], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only job on the reading connection (on this thread, see `_open_reader`)."""
        if self._reader is None:
            raise StoreUnavailable("store is closed")
        try:
            return job(self._reader)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write job in the next committed batch; return its result once durable."""
        if self._closing or self._writer is None:
            raise StoreUnavailable("store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        self._has_work.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._has_work.wait()
            self._has_work.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._closing:
                    return
                continue
            try:
                results = await self._run(functools.partial(self._commit_batch, batch=batch))
            except (sqlite3.Error, StoreUnavailable) as exc:
                error = StoreUnavailable(f"SQLite commit failed: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the caller gave up waiting; the write is committed all the same
                if isinstance(result, _Failed):
                    future.set_exception(result.error)
                else:
                    future.set_result(result)

    def _commit_batch(
        self, conn: sqlite3.Connection | None, batch: list[tuple[Job, asyncio.Future[Any]]]
    ) -> list[Any]:
        if conn is None:
            raise StoreUnavailable("store is closed")
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _ in batch:
                conn.execute("SAVEPOINT job")
                try:
                    results.append(job(conn))
                except sqlite3.OperationalError:
                    raise  # the database itself is in trouble: fail the whole batch
                except (sqlite3.Error, Conflict, ValueError) as exc:
                    conn.execute("ROLLBACK TO job")
                    results.append(_Failed(exc))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.writes += len(batch)
        self.commits += 1
        return results
