"""The embedded store: one SQLite file in WAL mode, `synchronous=FULL`, group commit.

`sql_store.py` holds the contract in SQL, `sqlite_db.py` runs the database (thread, group
commit, file lock), `sqlite_schema.py` holds the schema. SQLite serves one instance — one
process, or the workers of one `serve --workers N` on one host; several instances share
PostgreSQL instead.

Workers sharing the file (`serve_as_worker`: the supervisor's lock handed over) keep the
guarantees of one process:
- a decision and its commit: `lock_recipients` holds a lock per recipient across the workers
  (sendguard/store/host_keyed_lock.py) from the history read to the durable commit, so caps
  stay exact;
- claims: `claim_due` selects and marks in one job, which runs inside the writer's
  `BEGIN IMMEDIATE` transaction — the database's write lock — so no two workers claim a
  delivery; a claim is a lease, as with PostgreSQL;
- at start a worker releases only the claims of processes that are gone (`owner_gone`), not
  those of its running siblings.
- the pause, campaign decisions and approvals every decision reads are kept in memory while
  the settings' version, shared by the workers, stays (sendguard/store/settings_version.py).

Where each kind of work runs (sqlite3 blocks the thread that calls it):
- writes (`_write`): on the database thread, group-committed;
- point reads (`_read`: a row by key, an index range of a bounded number of rows): inline on
  the event loop, where they cost microseconds;
- aggregates and scans (`_scan`: counts over a table, listings, a page's history): on reader
  threads, so that one `/metrics` scrape or campaign listing over millions of deliveries does
  not stall every SMTP session and HTTP request meanwhile. A read whose cost grows with the
  size of the tables belongs in `_scan`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sendguard.address import recipient_key
from sendguard.approvals import Campaign, ContentApproval, GlobalPause
from sendguard.errors import StoreUnavailable
from sendguard.owner import owner_gone
from sendguard.store import StoreSettings, sql_content
from sendguard.store.host_keyed_lock import HostKeyedLock
from sendguard.store.keyed_lock import KeyedLock
from sendguard.store.message_cache import MessageCache
from sendguard.store.settings_version import SettingsVersion
from sendguard.store.sql_store import Job, SqlStore, Tx
from sendguard.store.sqlite_db import SQLiteDatabase, Trace, take_file_lock
from sendguard.store.sqlite_scratch import ScratchDatabase

T = TypeVar("T")

CAMPAIGNS_KEPT = 1024
"""Campaign rows, and campaigns' approvals, kept in memory at most (all forgotten when more
are read)."""


@dataclass(frozen=True)
class CommitStats:
    """How many writes the store committed in how many transactions (group commit at work)."""

    writes: int = 0
    commits: int = 0


class _Tx:
    """The shared SQL's view of a sqlite3 connection inside the current transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, args).rowcount

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = self._conn.execute(sql, args).fetchall()
        return rows


def _rewrite_user_version(conn: sqlite3.Connection) -> None:
    """A write that changes nothing but is written all the same (the header page): `check`'s
    probe of whether the disk takes commits again."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.execute(f"PRAGMA user_version = {int(version)}")


def drive(job: Job[T], conn: sqlite3.Connection) -> T:
    """Run a store job to completion on this thread.

    sqlite3 is synchronous, so the job's awaits all complete at once: one `send` finishes the
    coroutine without any event loop (the database thread has none).
    """
    tx: Tx = _Tx(conn)
    return settle(job(tx), "a store job may await only its transaction")  # type: ignore[arg-type]


def settle(coroutine: Coroutine[Any, Any, T], misuse: str) -> T:
    """The result of a coroutine whose awaits all complete at once (synchronous sqlite3
    underneath); RuntimeError(`misuse`) if it suspends after all."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError(misuse)


async def _to_its_end(write: Awaitable[None]) -> None:
    """Await `write`; when the caller is cancelled meanwhile, wait for the write's outcome all
    the same, then raise the cancellation."""
    task = asyncio.ensure_future(write)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = cancelled or not task.done()
    if cancelled:
        raise asyncio.CancelledError
    task.result()


class SQLiteStore(SqlStore):
    """The embedded store. `path` is the database file; its directory is created if missing.

    `scratch=True` gives up durability for speed, for a database thrown away after use (the
    replay of `sendguard simulate`): see `sqlite_scratch.py`. Never for a store that keeps mail.
    `trace` (tests): called with every SQL statement any of the store's connections runs.
    `held_lock`: see `serve_as_worker`.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: timedelta = timedelta(seconds=5),
        scratch: bool = False,
        trace: Trace | None = None,
        held_lock: int | None = None,
    ) -> None:
        self._db: SQLiteDatabase | ScratchDatabase = (
            ScratchDatabase(path) if scratch else SQLiteDatabase(path, busy_timeout, trace)
        )
        self._locks = KeyedLock()
        self._cache = MessageCache()
        self._pause: GlobalPause | None = None
        self._campaigns: dict[str, Campaign | None] = {}
        self._approvals: dict[str, tuple[ContentApproval, ...]] = {}
        self._shared: HostKeyedLock | None = None
        self._version: SettingsVersion | None = None
        self._kept_at: int | None = None
        """The settings' version the kept pause, campaigns and approvals were read at."""
        if held_lock is not None:
            self.serve_as_worker(held_lock)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path

    def serve_as_worker(self, held_lock: int) -> None:
        """Share the file with the other workers of one `serve --workers N` (call before
        `open`): `held_lock` is the lock file's descriptor, locked by the supervisor
        (`lock_for_workers`) and inherited by this worker. Also for a backend's subclass of
        this store: the supervisor and its workers recognise the store by its class, not its
        URL scheme."""
        if not isinstance(self._db, SQLiteDatabase):
            raise TypeError(f"{self.path}: a scratch store is never shared by workers")
        self._db.hand_over_lock(held_lock)
        self._shared = HostKeyedLock(self.path.with_name(self.path.name + ".recipients"))
        self._version = SettingsVersion(self.path.with_name(self.path.name + ".settings"))

    async def _write(self, job: Job[T]) -> T:
        return await self._db.write(lambda conn: drive(job, conn))

    async def _write_statement(self, job: Job[T], *, linger: bool = False) -> T:
        if isinstance(self._db, ScratchDatabase):  # one transaction throughout
            return await self._write(job)
        return await self._db.write(
            lambda conn: drive(job, conn), one_statement=True, linger=linger
        )

    async def _read(self, job: Job[T]) -> T:
        return await self._db.read(lambda conn: drive(job, conn))

    async def _scan(self, job: Job[T]) -> T:
        return await self._db.scan(lambda conn: drive(job, conn))

    async def open(self) -> None:
        await self._db.open()
        if self._shared is not None:
            self._shared.open()
        if self._version is not None:
            self._version.open()

    async def close(self) -> None:
        await self._db.close()
        if self._shared is not None:
            self._shared.close()
        if self._version is not None:
            self._version.close()

    async def check(self) -> None:
        if isinstance(self._db, SQLiteDatabase) and self._db.commit_failure is not None:
            # The last commit failed (disk full, ...). A relay that looks unready gets no mail
            # from a load balancer, so nothing else might write: a commit of its own tells
            # whether the disk takes writes again (and clears the failure if it does).
            with contextlib.suppress(StoreUnavailable):
                await self._db.write(_rewrite_user_version, one_statement=True)
        self._db.check()

    async def recover(self, now: datetime) -> int:
        shared = self._shared is not None

        # Alone, the file lock guarantees no other process works on this database, so every
        # claim left behind belongs to a process that is gone. Shared, sibling workers are
        # running: only the claims of owners that are gone are released (the rest, of an
        # owner this cannot judge, are taken over when their lease ends).
        released = await self._release_claims_of(lambda owner: not shared or owner_gone(owner))
        # Pieces of a large content whose message never committed (sql_content.py).
        await sql_content.forget_unfinished(self._write, shared=shared)
        return released

    # The global pause, campaign decisions and content approvals are read for every decision
    # and written only by `set_pause`, `set_campaign` and `add_approvals`. Alone, only this
    # process writes them (the file lock), so what was read stays true until one of those
    # runs here. Shared by workers, a sibling may write them: what was read is kept while
    # the settings' version (settings_version.py) has not moved. Reads of the SQLite store
    # finish without suspending (`drive`), so nothing of this process writes between a
    # version's check and the keeping of what was read at it.

    def _keeping(self) -> bool:
        """Whether what is kept may be used and what is read may be kept (if not, what was
        kept is forgotten)."""
        if self._version is None:
            return True
        now = self._version.current()
        if now is None or now != self._kept_at:
            self._forget_settings()
            self._kept_at = now
        return now is not None

    # A settings write runs to its end even when its caller is cancelled (a drain's, a
    # timeout's): the store commits the job all the same once it is in a batch, and the kept
    # rows must be forgotten, and the version moved, after that commit, not before it. Else a
    # read in between keeps the old row for good (a stale pause).

    async def _write_settings(self, write: Awaitable[None]) -> None:
        """Run `write` (of the pause, a campaign or approvals) to its end, with what is kept
        forgotten before and after it (read again: the committed rows, or the old ones on
        failure) and, shared, the version moved around it."""
        writing = (
            contextlib.nullcontext()  # alone, or closed: the write itself is refused
            if self._version is None or not self._version.opened
            else self._version.writing()
        )
        async with writing:
            self._forget_settings()
            try:
                await _to_its_end(write)
            finally:
                self._forget_settings()

    def _forget_settings(self) -> None:
        self._pause = None
        self._campaigns.clear()
        self._approvals.clear()

    async def get_pause(self) -> GlobalPause:
        if not self._keeping():
            return await super().get_pause()
        if self._pause is None:
            self._pause = await super().get_pause()
        return self._pause

    async def set_pause(self, pause: GlobalPause) -> None:
        await self._write_settings(super().set_pause(pause))

    async def get_campaign(self, name: str) -> Campaign | None:
        if not self._keeping():
            return await super().get_campaign(name)
        if name in self._campaigns:
            return self._campaigns[name]
        campaign = await super().get_campaign(name)
        if len(self._campaigns) >= CAMPAIGNS_KEPT:
            self._campaigns.clear()
        self._campaigns[name] = campaign
        return campaign

    async def set_campaign(self, campaign: Campaign) -> None:
        await self._write_settings(super().set_campaign(campaign))

    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        if not self._keeping():
            return await super().approvals(campaign)
        if campaign in self._approvals:
            return self._approvals[campaign]
        approvals = tuple(await super().approvals(campaign))
        if len(self._approvals) >= CAMPAIGNS_KEPT:
            self._approvals.clear()
        self._approvals[campaign] = approvals
        return approvals

    async def add_approvals(self, approvals: Sequence[ContentApproval]) -> None:
        await self._write_settings(super().add_approvals(approvals))

    @property
    def stats(self) -> CommitStats:
        """Writes and commits so far (for tests and the benchmark; not part of the contract)."""
        return CommitStats(writes=self._db.writes, commits=self._db.commits)

    def lock_recipients(
        self, recipients: Sequence[str], *, campaign: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        del campaign  # read when asked (a read costs no round trip here)
        if self._shared is not None:
            return self._shared.hold(recipient_key(r) for r in recipients)
        return self._locks.hold(recipient_key(r) for r in recipients)


def sqlite_path(url: str) -> Path:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` URL."""
    rest = url.removeprefix("sqlite://")
    if rest == url or not rest.startswith("/") or rest == "/":
        raise ValueError(
            f"{url!r} must look like sqlite:///var/sendguard.db (relative to the working "
            "directory) or sqlite:////abs/path.db"
        )
    # sqlite:///var/x.db -> "var/x.db" (relative to the working directory);
    # sqlite:////abs/x.db -> "/abs/x.db".
    return Path(rest[1:])


class SQLiteBackend:
    """`sqlite:///relative/path.db` or `sqlite:////absolute/path.db` (scheme `sqlite`)."""

    def from_url(self, url: str, settings: StoreSettings) -> SQLiteStore:
        """The store in the file the URL names (created with its directory on open)."""
        return SQLiteStore(sqlite_path(url), busy_timeout=settings.busy_timeout)

    @asynccontextmanager
    async def scratch(
        self, directory: Path, environ: Mapping[str, str]
    ) -> AsyncIterator[SQLiteStore]:
        """A new file in `directory` (which the caller removes)."""
        del environ
        yield self.from_url(f"sqlite:///{directory / 'store.db'}", StoreSettings())


def lock_for_workers(store: object) -> int | None:
    """For a `serve --workers N` supervisor: lock the database of an embedded store (the
    `sqlite` backend's or a plugged-in backend's subclass of SQLiteStore; `store` not opened)
    and return the descriptor its workers inherit (None for other stores, which need no
    lock). Raise StoreLocked if another instance holds it."""
    if not isinstance(store, SQLiteStore):
        return None
    return take_file_lock(store.path)


BACKEND = SQLiteBackend()
"""Registered under `sendguard.stores` as `sqlite`."""
