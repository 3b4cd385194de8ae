"""One SQLite database: a writer thread with group commit, and readers.

Writes run on a dedicated thread. They are queued and committed in batches: while one batch
is being fsynced, the next one collects, so durability costs one fsync per batch, not per
message. One failing write does not fail the others in its batch, whatever it raises (the
batch is rolled back and run again without it); a failure of the database itself (busy, I/O,
disk full) fails the batch with StoreUnavailable. The writer task outlives every such
failure; should it stop anyway (cancelled, or a BaseException), every waiting and later write
and `check` raise StoreUnavailable (SMTP 451, HTTP 503, readyz 503) instead of waiting forever.
A commit the disk refuses (full, I/O error, read-only file) makes `check` fail with its cause
until a commit succeeds again (`commit_failure`).

Where reads run:
- `read`: point reads (a row by key, an index range of a bounded number of rows) run inline
  on the event loop's thread; they take microseconds, less than a hop to another thread.
- `scan`: aggregates and scans (counts over a table, listings, look-ups of a whole page) run
  on a small pool of reader threads with their own connections. sqlite3 releases the GIL
  while a statement steps, so the event loop keeps serving SMTP and HTTP meanwhile, and the
  writer thread is not held up either. In WAL mode no reader waits for the writer.

A lock file keeps a second, unrelated process from opening the same database. The workers of
one `serve --workers N` share it: their supervisor takes the lock (`take_file_lock`) and every
worker inherits that descriptor (`held_lock`), so the lock stays held while any of them runs.

`trace`, when given, is installed with `set_trace_callback` on every connection (the writer, the
point reader, each scanner): it sees every statement as SQLite runs it, from whichever thread
runs it. Tests count statements per message with it; it is off in production.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog

from sendguard.errors import StoreLocked, StoreUnavailable
from sendguard.store.sqlite_schema import migrate, tell_the_planner
from sendguard.store.writer_thread import WriterThread

log = structlog.get_logger("sendguard.store.sqlite")
T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Trace = Callable[[str], None]

# sqlite3 binds int, float and str directly, but looks up an adapter for every other value,
# None and bytes too: a failed look-up in its table, then two of attributes, one of which
# raises and clears an AttributeError (about 2,000 instructions per value, some 20 per
# message). Adapters that hand the value back as it is make that a table look-up and a call;
# the value bound is the same. (Neither type is one whose registration turns off sqlite3's
# own shortcut for int, float and str.)
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))  # {}.get(None)
sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b

# Two, so a scrape of /metrics need not wait behind a listing; more would only compete for
# the same cores.
SCANNERS = 2

# How much of the database file each reading connection maps into memory (address space,
# not memory: the kernel's page cache backs it, shared by every connection and worker).
READER_MMAP = 1024 * 1024 * 1024

# The writer's page cache, in KiB (SQLite's default is 2 MB). Each message inserts into
# indexes whose keys are spread over the file (recipient, Message-ID, resend key), so once
# they outgrow the cache nearly every insert re-read its leaf page: 38-43 `pread64` a message
# in `bench/syscalls.py` (4,000 messages into a new file), 3 with 32 MB. The writer does not
# map the file (docs/performance.md, "the point reader's memory map on the writer's
# connection"). Memory: at most this much per worker, filled only as the file grows.
WRITER_CACHE_KIB = 32 * 1024

# How long a lingering write (see `write`) waits at most, from when it is asked, for another
# write to share its commit. At idle a lone sender's next message is written about 0.5-1 ms
# after the previous one's `sent` (its MAIL, RCPT, DATA and decision); two commits became one.
LINGER = 0.002


# How much free space a file system whose fullness failed a commit must have again before
# the store counts as ready (see `_recovered`): room for a few large messages.
ROOM_TO_RECOVER = 1024 * 1024


@dataclass
class _Failed:
    error: Exception


@dataclass(frozen=True)
class _OneStatement:
    """A write job that writes with one statement (see `write`)."""

    job: Job

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.job(conn)


@dataclass(frozen=True)
class _Lingering(_OneStatement):
    """A one-statement write that may wait a little for company (see `write`)."""


def _job_failure(exc: Exception) -> _Failed:
    # A future cannot carry StopIteration (asyncio refuses it), so it travels wrapped.
    if isinstance(exc, StopIteration):
        return _Failed(RuntimeError(f"a store job raised {exc!r}"))
    return _Failed(exc)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _lingering_last(done: tuple[tuple[Job, asyncio.Future[Any]], Any]) -> bool:
    return isinstance(done[0][0], _Lingering)


def _commit_failure(path: Path, exc: Exception) -> StoreUnavailable:
    """What a failed commit tells the client, readiness and the metrics: the cause, classed
    by SQLite's error code, and what the operator can do about it."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        return StoreUnavailable(
            f"the disk holding {path.resolve()} is full ({exc}): free space on it",
            kind="disk_full",
        )
    if primary == sqlite3.SQLITE_IOERR:
        return StoreUnavailable(
            f"writing {path.resolve()} failed with an I/O error ({exc}): check the disk",
            kind="io_error",
        )
    if primary == sqlite3.SQLITE_READONLY:
        return StoreUnavailable(
            f"{path.resolve()} cannot be written ({exc}): make it and its directory writable"
            " by sendguard's user, on a file system mounted read-write",
            kind="read_only",
        )
    if isinstance(exc, StoreUnavailable):
        return exc
    return StoreUnavailable(f"SQLite commit failed: {exc}")


def _fails_the_batch(exc: sqlite3.Error) -> bool:
    """Whether an error means the database is in trouble (busy, locked, I/O, disk full)
    rather than that one job's statement was wrong (SQLITE_ERROR: no such column, ...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and (
        code is None or code & 0xFF != sqlite3.SQLITE_ERROR
    )


def take_file_lock(path: Path) -> int:
    """Lock the database at `path` for this process (and children that inherit the
    descriptor); return the descriptor. Raise StoreLocked if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(
            f"{path} is in use by another sendguard process; SQLite serves the workers of one "
            "`sendguard serve` (stop the other one, run one serve with --workers N, or use a "
            "PostgreSQL store.url for several instances)"
        ) from None
    return fd


class SQLiteDatabase:
    """The connection, its thread and the group-commit writer; the readers."""

    def __init__(
        self,
        path: Path,
        busy_timeout: timedelta,
        trace: Trace | None = None,
    ) -> None:
        self.path = path
        self._held_lock: int | None = None
        self._busy_timeout = busy_timeout
        self._trace = trace
        self._executor: WriterThread | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._scanner: ThreadPoolExecutor | None = None
        self._scanner_conn = threading.local()
        self._scanner_conns: list[sqlite3.Connection] = []
        self._scanner_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._shared = False
        self._pending: list[tuple[Job, asyncio.Future[Any]]] = []
        self._in_flight: list[tuple[Job, asyncio.Future[Any]]] = []
        self._has_work = asyncio.Event()
        # When the oldest lingering write of `_pending` stops waiting for company.
        self._linger_until: float | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writer_gone: str | None = None
        # Why the last commit failed, while the disk or the file refuses writes (full, I/O
        # error, read-only); None once a commit succeeds. `check` answers with it.
        self.commit_failure: StoreUnavailable | None = None
        self._closing = False
        self.writes = 0
        self.commits = 0

    def hand_over_lock(self, held_lock: int) -> None:
        """Before `open`: use `held_lock`, the lock file's descriptor locked by the supervisor
        this process serves as a worker of, instead of taking the lock here."""
        self._held_lock = held_lock

    async def open(self) -> None:
        """Take the file lock, connect, migrate, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_file_lock()
        self._executor = WriterThread("sendguard-sqlite")
        try:
            await self._run(lambda _: self._connect())
        except BaseException:
            self._executor.shutdown()
            self._executor = None
            self._release_file_lock()
            raise
        try:
            self._reader = self._open_reader()
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._scanner = ThreadPoolExecutor(SCANNERS, thread_name_prefix="sendguard-sqlite-scan")
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-group-commit")
        self._writer.add_done_callback(self._writer_stopped)

    def _open_reader(self) -> sqlite3.Connection:
        # Point reads run on the event loop's own thread: an indexed read takes microseconds,
        # far less than a hop to another thread, and in WAL mode readers never wait for the
        # writer. Reads see every committed batch.
        reader = sqlite3.connect(
            f"file:{self.path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout.total_seconds(),
        )
        reader.set_trace_callback(self._trace)
        reader.execute("PRAGMA query_only = ON")
        # Pages of the database file read through a memory map instead of a read() each:
        # past the page cache (2 MB) every B-tree page a read touches was a system call.
        reader.execute(f"PRAGMA mmap_size = {READER_MMAP}")
        return reader

    def _take_file_lock(self) -> None:
        if self._held_lock is None:
            self._lock_fd = take_file_lock(self.path)
            return
        # Inherited from the supervisor: the same open file, so this succeeds only if the
        # descriptor really carries the lock (a stray descriptor would not).
        try:
            fcntl.flock(self._held_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise StoreLocked(
                f"{self.path}: the lock handed over by the supervisor is not held ({exc})"
            ) from None
        self._lock_fd, self._held_lock = self._held_lock, None
        self._shared = True

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
            conn.set_trace_callback(self._trace)
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            applied = migrate(conn)
            tell_the_planner(conn)
        except (sqlite3.Error, RuntimeError) as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._conn = conn
        if applied[:1] == [1]:  # a new file: one line, not one per migration
            log.info("created", path=str(self.path), version=applied[-1])
        else:
            for version in applied:  # as the PostgreSQL store logs its migrations
                log.info("migrated", path=str(self.path), version=version)

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch a new database to WAL. The switch takes the file's exclusive lock, and
        SQLite answers "database is locked" at once, without its busy handler, while another
        connection holds a lock: the workers of `serve --workers N` on a new file all make
        the switch together, and one of them died at start (about one start in thirteen).
        Retried within the busy timeout, as the handler would have waited."""
        deadline = time.monotonic() + self._busy_timeout.total_seconds()
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            else:
                return

    async def close(self) -> None:
        """Commit what is pending, close the connections, release the file lock."""
        self._closing = True
        self._has_work.set()
        if self._writer is not None:
            # wait, not await: a writer that died has already failed its callers
            await asyncio.wait([self._writer])
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        loop = asyncio.get_running_loop()
        if self._scanner is not None:
            scanner, self._scanner = self._scanner, None
            await loop.run_in_executor(None, functools.partial(scanner.shutdown, wait=True))
            for conn in self._scanner_conns:
                conn.close()
            self._scanner_conns.clear()
        if self._executor is not None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._executor.run(conn.close)
            self._executor.shutdown()
            self._executor = None
        self._release_file_lock()

    async def _run(self, fn: Callable[[sqlite3.Connection | None], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable("store is not open")
        conn = self._conn
        return await self._executor.run(lambda: fn(conn))

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a point read on the reading connection (on this thread, see `_open_reader`)."""
        if self._reader is None:
            raise StoreUnavailable("store is closed")
        try:
            return job(self._reader)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    async def scan(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read that may touch many rows (an aggregate, a listing) on a reader thread."""
        if self._scanner is None:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._scanner, self._scan_here, job)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    def _scan_here(self, job: Callable[[sqlite3.Connection], T]) -> T:
        # One connection per reader thread, opened on its first job and closed by `close`.
        conn: sqlite3.Connection | None = getattr(self._scanner_conn, "conn", None)
        if conn is None:
            conn = self._open_reader()
            self._scanner_conn.conn = conn
            with self._scanner_lock:
                self._scanner_conns.append(conn)
        return job(conn)

    def check(self) -> None:
        """Raise StoreUnavailable unless reads and writes can be served."""
        if self._writer_gone is not None:
            raise StoreUnavailable(self._writer_gone)
        if self._closing or self._writer is None or self._reader is None:
            raise StoreUnavailable("store is closed")
        failure = self.commit_failure or self._disk_without_room()
        if failure is not None:
            raise StoreUnavailable(str(failure), kind=failure.kind)
        try:
            self._reader.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    async def write(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        one_statement: bool = False,
        linger: bool = False,
    ) -> T:
        """Run a write job in the next committed batch; return its result once durable.

        Whatever the job raises fails that job alone and is raised here. With
        `one_statement`, the job writes with one statement at most (its reads before or
        after it need not share its snapshot): alone in its batch, that statement commits
        on its own, without BEGIN and COMMIT (as durably: synchronous=FULL).

        With `linger` (and `one_statement`), a batch of nothing but such writes waits up to
        `LINGER` after the first of them was asked for another write, and commits with it:
        one commit (one fsync, one trip to the writer's thread) instead of two. Any other
        write ends the wait at once and is never delayed by it; the lingering write's
        commit is, by `LINGER` at most. Its result is handed back after the other writes'.
        """
        if self._writer_gone is not None:
            raise StoreUnavailable(self._writer_gone)
        if self._closing or self._writer is None:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not one_statement:
            self._pending.append((job, future))
        elif linger:
            self._pending.append((_Lingering(job), future))
            if self._linger_until is None:
                self._linger_until = loop.time() + LINGER
        else:
            self._pending.append((_OneStatement(job), future))
        self._has_work.set()
        return await future

    def _lingering(self, loop: asyncio.AbstractEventLoop) -> float:
        """How much longer the pending writes wait for company (0: go now)."""
        if self._closing or self._linger_until is None:
            return 0.0
        if not all(isinstance(job, _Lingering) for job, _ in self._pending):
            return 0.0
        return self._linger_until - loop.time()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._closing:  # closing: commit what is left, then stop
                await self._has_work.wait()
            # One turn of the loop first: writes that tasks ready now are about to ask for
            # join this batch (one BEGIN and COMMIT, one fsync) instead of starting the next.
            await asyncio.sleep(0)
            self._has_work.clear()
            wait = self._lingering(loop)
            if wait > 0:
                # Until another write is asked for, `close`, or the lingering ends.
                timer = loop.call_at(loop.time() + wait, self._has_work.set)
                await self._has_work.wait()
                timer.cancel()
                continue
            self._linger_until = None
            batch, self._pending = self._pending, []
            if not batch:
                if self._closing:
                    return
                continue
            self._in_flight = batch
            await self._commit_on_thread(loop, batch)

    def _commit_on_thread(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Job, asyncio.Future[Any]]]
    ) -> asyncio.Future[None]:
        """Commit `batch` on the database thread; done once its writers have their results.

        The thread hands the results to the loop itself (one `call_soon_threadsafe`), and they
        go straight to the writers: through `run_in_executor` they took a turn of the loop
        more (its future, then this task, then the writers).
        """
        if self._executor is None:
            raise StoreUnavailable("store is not open")
        finished: asyncio.Future[None] = loop.create_future()

        def commit() -> None:
            try:
                results = self._commit_batch(self._conn, batch)
                if self.commit_failure is not None and self._recovered(self.commit_failure):
                    self.commit_failure = None
            except (sqlite3.Error, StoreUnavailable) as exc:
                failure = _commit_failure(self.path, exc)
                if failure.kind != "unavailable":
                    self.commit_failure = failure
                results = [_Failed(failure)] * len(batch)
            except Exception as exc:  # the writer must outlive anything one batch does
                log.exception("SQLite batch failed unexpectedly; its writes are refused")
                results = [_Failed(StoreUnavailable(f"SQLite commit failed: {exc!r}"))] * len(batch)
            except BaseException as exc:  # ends the writer, as it would have ended the task
                loop.call_soon_threadsafe(_fail, finished, exc)
                raise
            loop.call_soon_threadsafe(self._hand_back, batch, results, finished)

        self._executor.post(commit)
        return finished

    def _disk_without_room(self) -> StoreUnavailable | None:
        """The disk full although no commit of this process failed yet: under `--workers` a
        sibling ran into it (the workers share the file system), or the last space went to
        something else. Readiness is then the same whichever worker answers, and turns back
        when `ROOM_TO_RECOVER` is free, as `_recovered` does for a commit of its own."""
        try:
            room = os.statvfs(self.path.parent)
        except OSError:
            return None
        free = room.f_bavail * room.f_frsize
        if free >= ROOM_TO_RECOVER:
            return None
        return StoreUnavailable(
            f"the disk holding {self.path.resolve()} is full ({free:,} bytes free, under the"
            f" {ROOM_TO_RECOVER:,} a few large messages need): free space on it",
            kind="disk_full",
        )

    def _recovered(self, failure: StoreUnavailable) -> bool:
        """Whether a commit that succeeded ends `failure`. A full disk still takes a small
        commit whose pages fit in the WAL file's space already allocated, and would fail the
        next message: it counts as over once the file system has `ROOM_TO_RECOVER` free."""
        if failure.kind != "disk_full":
            return True
        try:
            room = os.statvfs(self.path.parent)
        except OSError:
            return True
        return room.f_bavail * room.f_frsize >= ROOM_TO_RECOVER

    def _hand_back(
        self,
        batch: list[tuple[Job, asyncio.Future[Any]]],
        results: list[Any],
        finished: asyncio.Future[None],
    ) -> None:
        self._in_flight = []
        done = list(zip(batch, results, strict=True))
        # Lingering writes last: their callers (a `sent` after a send) answer nobody,
        # while the others' may be waiting to answer a client.
        for (_, future), result in sorted(done, key=_lingering_last):
            if future.done():
                continue  # the caller gave up waiting; the write is committed all the same
            if isinstance(result, _Failed):
                future.set_exception(result.error)
            else:
                future.set_result(result)
        if not finished.done():
            finished.set_result(None)

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """The writer ended: fine when closing; otherwise refuse every write from now on."""
        if task.cancelled():
            why = "it was cancelled"
        elif (error := task.exception()) is not None:
            why = f"{type(error).__name__}: {error}"
        else:
            return  # closed
        self._writer_gone = f"the SQLite writer stopped ({why}); restart sendguard"
        log.critical("SQLite writer stopped; every write is refused", reason=why)
        failed = StoreUnavailable(self._writer_gone)
        waiting, self._in_flight, self._pending = [*self._in_flight, *self._pending], [], []
        for _, future in waiting:
            if not future.done():
                future.set_exception(failed)

    def _commit_batch(
        self, conn: sqlite3.Connection | None, batch: list[tuple[Job, asyncio.Future[Any]]]
    ) -> list[Any]:
        if not self._shared or self._lock_fd is None:
            return self._commit_batch_now(conn, batch)
        # Workers sharing the file take turns at writing through a record lock, tried every
        # 50-500 µs: SQLite's own busy handler would sleep 1, 2, 5 ... 100 ms between tries
        # of BEGIN IMMEDIATE, and a worker would wait far longer than the other one writes.
        fd = self._lock_fd
        deadline = time.monotonic() + self._busy_timeout.total_seconds()
        pause = 0.00005
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                break
            except (BlockingIOError, PermissionError):
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"SQLite database {self.path} stayed locked by another worker for"
                        f" {self._busy_timeout.total_seconds():g}s (store.busy_timeout)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.0005)
        try:
            return self._commit_batch_now(conn, batch)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)

    def _commit_batch_now(
        self, conn: sqlite3.Connection | None, batch: list[tuple[Job, asyncio.Future[Any]]]
    ) -> list[Any]:
        if conn is None:
            raise StoreUnavailable("store is closed")
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # left open by a batch whose own ROLLBACK failed
        if len(batch) == 1 and isinstance(batch[0][0], _OneStatement):
            return [self._commit_alone(conn, batch[0][0])]
        # No savepoint per job: that is two statements per write, for a failure that is rare.
        # When a job fails, the whole transaction is rolled back and the batch runs again
        # without it; the jobs before it see the same database as the first time, so they
        # do the same, and the failed job left nothing behind, as a savepoint would ensure.
        failed: dict[int, _Failed] = {}
        while True:
            results: list[Any] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for index, (job, _) in enumerate(batch):
                    if index in failed:
                        results.append(failed[index])
                        continue
                    try:
                        results.append(job(conn))
                    except sqlite3.Error as exc:
                        if _fails_the_batch(exc):
                            raise
                        failed[index] = _job_failure(exc)
                        break
                    except Exception as exc:  # noqa: BLE001 - whatever one job raises fails it alone
                        failed[index] = _job_failure(exc)
                        break
                else:
                    conn.execute("COMMIT")
                    break
                conn.execute("ROLLBACK")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self.writes += len(batch)
        self.commits += 1
        return results

    def _commit_alone(self, conn: sqlite3.Connection, job: _OneStatement) -> Any:
        """Run a one-statement job outside a transaction: its statement is its commit.

        Two statements fewer than BEGIN and COMMIT around it, and two fewer hand-offs of the
        GIL from a busy event loop's thread. An error after its statement leaves what the
        statement wrote committed, as `SqlJobs._write_one` allows.
        """
        try:
            result = job(conn)
        except sqlite3.Error as exc:
            if _fails_the_batch(exc):
                raise
            result = _job_failure(exc)
        except Exception as exc:  # noqa: BLE001 - whatever one job raises fails it alone
            result = _job_failure(exc)
        self.writes += 1
        self.commits += 1
        return result
