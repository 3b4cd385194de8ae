"""A throwaway SQLite database: the scratch store of `sendguard simulate`, nothing else.

The production database (`sqlite_db.py`) makes every write durable before it answers: WAL,
`synchronous=FULL`, a writer thread with group commit. A replay is one caller awaiting one
write after another, so group commit never groups and each message paid an fsync and two
thread hops. A scratch store is deleted when the replay ends, so it needs none of that:
- one connection, used inline on the caller's thread for writes, point reads and scans;
- `synchronous=OFF` and the rollback journal in memory: no fsync at all;
- one transaction spans many writes (committed every `COMMIT_EVERY` writes and on close),
  each write in its own savepoint, so a failing write still fails alone.
- the planner is told the shape of a replay's tables (`_SHAPE`): without statistics SQLite
  looks for due work through the index on state, reading every delayed delivery each time, so
  a replay slowed down as its backlog grew; statistics measured early in a replay (all sent,
  nothing due yet) are worse still. The shape given: most deliveries are finished, few are due.
Reads on the same connection see every write that has returned, as with the durable store.
A store above may also hand it a write to run later (`defer`): the replay's store gathers the
rows of many messages and writes them in one go. That write runs, in its own savepoint, before
anything else uses the connection, so every read still sees it; only reads the caller knows it
cannot change may pass before it (`past_deferred`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sendguard.errors import StoreUnavailable
from sendguard.store.sqlite_schema import PLANNER_SHAPE, migrate

T = TypeVar("T")

# The shape of the tables the planner is told (sqlite_schema.py, as for the durable store).
_SHAPE = PLANNER_SHAPE

# Large enough that commits cost nothing next to the writes, small enough that the journal
# held in memory stays small.
COMMIT_EVERY = 2000


class ScratchDatabase:
    """The same interface as `SQLiteDatabase`, without durability (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._uncommitted = 0
        self._deferred: Callable[[sqlite3.Connection], int] | None = None
        self._passing = 0  # > 0: reads pass the deferred write (`past_deferred`)
        self.writes = 0
        self.commits = 0

    async def open(self) -> None:
        """Connect, migrate, open the first transaction."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=MEMORY")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: a replay rereads what it wrote
            migrate(conn)
            conn.execute("ANALYZE")  # creates sqlite_stat1 (the tables are empty)
            conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", _SHAPE)
            conn.execute("ANALYZE sqlite_schema")  # the planner reads sqlite_stat1 again
            conn.execute("BEGIN")
        except (sqlite3.Error, RuntimeError) as exc:
            raise StoreUnavailable(f"cannot open scratch database {self.path}: {exc}") from exc
        self._conn = conn

    async def close(self) -> None:
        """Commit (so the file is whole for whoever looks at it before it goes) and close."""
        if self._conn is None:
            return
        try:
            self._run_deferred(self._conn)
        finally:
            conn, self._conn = self._conn, None
            self._commit_and_close(conn)

    def _commit_and_close(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
                self.commits += 1
        finally:
            conn.close()

    def _open_conn(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("store is closed")
        if self._deferred is not None and not self._passing:
            self._run_deferred(conn)
        return conn

    def defer(self, write: Callable[[sqlite3.Connection], int]) -> None:
        """Run `write` before the connection is next used (or closed), in its own savepoint,
        as one write job; it returns how many writes it stands for (the commit cadence counts
        them). One deferred write at a time: gather into it until it runs."""
        if self._deferred is not None:
            raise RuntimeError("a deferred write is already waiting")
        self._deferred = write

    def settle(self) -> None:
        """Run the deferred write now, if one waits."""
        self._open_conn()

    @contextmanager
    def past_deferred(self) -> Iterator[None]:
        """Within this block, use the connection without running the deferred write first:
        only for reads the caller knows that write cannot change."""
        self._passing += 1
        try:
            yield
        finally:
            self._passing -= 1

    def _run_deferred(self, conn: sqlite3.Connection) -> None:
        write, self._deferred = self._deferred, None
        if write is not None:
            self._wrote(conn, self._savepoint(conn, write))

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a point read on the one connection."""
        return job(self._open_conn())

    async def scan(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a scan on the one connection (nothing else runs meanwhile: no thread to gain)."""
        return job(self._open_conn())

    def check(self) -> None:
        """Raise StoreUnavailable once closed."""
        self._open_conn()

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write job in its own savepoint; whatever it raises undoes it alone."""
        conn = self._open_conn()
        result = self._savepoint(conn, job)
        self._wrote(conn, 1)
        return result

    @staticmethod
    def _savepoint(conn: sqlite3.Connection, job: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("SAVEPOINT job")
        try:
            result = job(conn)
        except BaseException:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            raise
        conn.execute("RELEASE job")
        return result

    def _wrote(self, conn: sqlite3.Connection, writes: int) -> None:
        """Count `writes` more; commit once there are COMMIT_EVERY uncommitted."""
        self.writes += writes
        self._uncommitted += writes
        if self._uncommitted >= COMMIT_EVERY:
            conn.execute("COMMIT")
            self.commits += 1
            self._uncommitted = 0
            conn.execute("BEGIN")
