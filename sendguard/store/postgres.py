"""The PostgreSQL store: several sendguard instances, one state.

The same SQL as the embedded store (sql_store.py), on asyncpg connections of the store's own
pool (postgres_pool.py):
- schema migrations run at start under an advisory lock, so instances starting together
  do not race; `synchronous_commit` is left as the server has it (on), so an answer of
  250/202 means committed;
- due work is claimed with `FOR UPDATE SKIP LOCKED`; a claim of an instance that died is
  taken over when its lease runs out;
- `lock_recipients` takes a session advisory lock per recipient on one connection and runs
  the decision's reads and the commit on that same connection, so caps hold across instances
  (a lone recipient's lock is taken by the decision's first read and handed to the commit's
  transaction: `_locked`, `_locked_reads`, `_run_all`);
- work made due now (a fact, an event, an approval) is announced with NOTIFY; every
  instance LISTENs and wakes its dispatcher;
- a lost database answers StoreUnavailable (SMTP 451, HTTP 503); the pool reconnects by
  itself when the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog

from sendguard.address import recipient_key
from sendguard.approvals import Campaign, ContentApproval, GlobalPause
from sendguard.clock import from_micros
from sendguard.errors import Conflict, StoreUnavailable
from sendguard.owner import owner_gone
from sendguard.recipient import RecipientReads
from sendguard.resend import CopyQuery
from sendguard.store import StoreSettings, codec, sql_content
from sendguard.store.keyed_lock import KeyedLock
from sendguard.store.message_cache import MessageCache
from sendguard.store.postgres_pool import ConnectionPool
from sendguard.store.postgres_schema import MIGRATIONS, SCHEMA_LOCK
from sendguard.store.sql_dispatch import DUE_STATES_SQL
from sendguard.store.sql_history import _RECIPIENT_READS, recipient_reads_query
from sendguard.store.sql_store import SENDING_TRANSITIONS, Job, SqlStore, Tx, Write
from sendguard.store.sqlite_db import Trace

log = structlog.get_logger("sendguard.store.postgres")
T = TypeVar("T")
CHANNEL = "sendguard_wake"

# The database is gone or going: the caller answers "try again later".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    # a connection broken mid-operation can be left "busy" until the pool replaces it
    asyncpg.exceptions.InternalClientError,
)

# The server refused a commit for a cause that outlasts the request: its disk, a read-only
# standby. `check` fails with it (readiness) until a write succeeds again.
_REFUSED: dict[type[asyncpg.PostgresError], tuple[str, str]] = {
    asyncpg.exceptions.DiskFullError: (
        "disk_full",
        "the PostgreSQL server's disk is full ({exc}): free space on it",
    ),
    asyncpg.exceptions.PostgresIOError: (
        "io_error",
        "the PostgreSQL server failed to write with an I/O error ({exc}): check its disk",
    ),
    asyncpg.exceptions.ReadOnlySQLTransactionError: (
        "read_only",
        "PostgreSQL refuses writes ({exc}): point store.url at the primary, or make the"
        " database writable",
    ),
}
_REFUSALS = tuple(_REFUSED)


def _refusal(exc: asyncpg.PostgresError) -> StoreUnavailable:
    for refused, (kind, message) in _REFUSED.items():
        if isinstance(exc, refused):
            return StoreUnavailable(message.format(exc=exc), kind=kind)
    return StoreUnavailable(f"PostgreSQL write failed: {exc}")


# Inside lock_recipients, every store call of the task runs on the connection holding the locks.
_HELD: ContextVar[asyncpg.Connection | None] = ContextVar("sendguard_pg_conn", default=None)
# The global pause read by the statement that took the lock, for the block's first `get_pause`.
_PAUSE: ContextVar[list[GlobalPause] | None] = ContextVar("sendguard_pg_pause", default=None)
# Inside lock_recipients: the approvals of each campaign read with its row (`get_campaign`).
_APPROVALS: ContextVar[dict[str, list[ContentApproval]] | None] = ContextVar(
    "sendguard_pg_approvals", default=None
)


@dataclass
class _Pending:
    """A lone recipient's lock, not taken yet: the block's first statement takes it."""

    key: str
    campaign: str | None
    sent: bool = False
    """Whether a statement taking the lock was sent (then the block's end unlocks)."""


# Inside lock_recipients of one recipient: its lock, until the block's first statement.
_PENDING: ContextVar[_Pending | None] = ContextVar("sendguard_pg_pending", default=None)
# Inside lock_recipients: each campaign's row read with the lock, for the first `get_campaign`.
_CAMPAIGNS: ContextVar[dict[str, Campaign | None] | None] = ContextVar(
    "sendguard_pg_campaigns", default=None
)

_LOCK_AND_PAUSE = (
    "SELECT pg_try_advisory_lock($1), p.paused, p.updated_at, p.updated_by, p.note"
    " FROM (SELECT 1) AS one LEFT JOIN global_pause p ON p.id = 1"
)
"""A recipient's lock if it is free, and the global pause, in one round trip."""

_HANDOVER = "SELECT pg_advisory_unlock_all() FROM (SELECT pg_advisory_xact_lock(?)) AS held"
"""The recipient's lock taken for the transaction, then the session's given up (the last
statement of a block's commit: `_run_all`). The subquery runs first (a volatile function keeps
it from being merged into the outer query), so no moment passes without the lock; the
transaction's lock ends after its commit is durable and visible, and `pg_advisory_unlock_all`
gives up session locks only."""

_CAMPAIGN_AND_APPROVALS = (
    "SELECT c.name, c.approval, c.paused, c.updated_at, c.updated_by,"
    " a.content_hash, a.approved_by, a.approved_at, a.links"
    " FROM (SELECT 1) AS one LEFT JOIN campaigns c ON c.name = $1"
    " LEFT JOIN approvals a ON a.campaign = $1"
    " ORDER BY a.approved_at DESC, a.content_hash, a.links"
)
"""A campaign's row and its content approvals (newest first), in one round trip."""


# Tags of the rows `_LOCKED_READS` adds to those of `recipient_reads` (kinds below 6).
_CAMPAIGN_ROW, _APPROVAL_ROW, _PAUSE_ROW = 6, 7, 8


def _locked_reads(history: bool, events: bool, copies: bool, campaign: bool) -> tuple[str, str]:
    """A function taking a recipient's lock, then reading what a decision reads: its name, and
    the SQL creating it in `pg_temp` (each pooled connection makes its own at connect).

    Its arguments: those of `recipient_reads_query`, the lock key, then (with `campaign`) the
    campaign's name. It answers `recipient_reads`' tagged rows, the global pause's row and the
    campaign's row and approvals, each in the columns of the same types. A VOLATILE function
    takes a new snapshot for each statement it runs: its reads see every commit made before
    the lock was granted (the last holder's, whose unlock follows its commit), as the reads
    made by statements of their own after `pg_advisory_lock` did. One statement that took the
    lock and read in its own snapshot would not: that snapshot is taken before the lock.
    """
    name = f"sendguard_locked_reads_{int(history)}{int(events)}{int(campaign)}"
    if copies:
        name += "_copies"
    types = ["text", "bigint"] * history + ["text", "bigint"] * events
    types += ["bigint", "text", "bigint"] * copies + ["text"] * 3
    parts = [
        numbered(_RECIPIENT_READS[history, events, copies]),
        f"SELECT {_PAUSE_ROW}, p.paused::text, p.updated_by, p.note, NULL, p.updated_at"
        " FROM global_pause p WHERE p.id = 1",
    ]
    lock = len(types) + 1
    types.append("bigint")
    if campaign:
        types.append("text")
        parts.append(
            f"SELECT {_CAMPAIGN_ROW}, c.name, c.approval, c.paused::text, c.updated_by,"
            f" c.updated_at FROM campaigns c WHERE c.name = ${lock + 1}"
        )
        parts.append(
            f"SELECT {_APPROVAL_ROW}, a.content_hash, a.approved_by, a.links,"
            " (row_number() OVER (ORDER BY a.approved_at DESC, a.content_hash, a.links))::text,"
            f" a.approved_at FROM approvals a WHERE a.campaign = ${lock + 1}"
        )
    union = " UNION ALL ".join(parts)
    ddl = (
        f"CREATE OR REPLACE FUNCTION pg_temp.{name}({', '.join(types)})"
        " RETURNS TABLE (r_kind integer, r_t1 text, r_t2 text, r_t3 text, r_t4 text,"
        " r_i1 bigint) LANGUAGE plpgsql VOLATILE AS $body$"
        " #variable_conflict use_column\n"
        f" BEGIN PERFORM pg_advisory_lock(${lock});"
        " RETURN QUERY SELECT u.kind::integer, u.t1::text, u.t2::text, u.t3::text, u.t4::text,"
        f" u.i1::bigint FROM ({union}) AS u (kind, t1, t2, t3, t4, i1);"
        " END $body$"
    )
    return name, ddl


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, ...`."""
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


_LOCKED_READS = {
    (h, e, r, c): _locked_reads(h, e, r, c)
    for h in (False, True)
    for e in (False, True)
    for r in (False, True)
    for c in (False, True)
}
"""The functions of `_locked_reads`, by (history, events, copies, campaign) read."""
_MAKE_LOCKED_READS = ";\n".join(ddl for _, ddl in _LOCKED_READS.values())


@lru_cache(maxsize=64)
def _locked_reads_call(name: str, arguments: int) -> str:
    """The statement calling function `name` with `arguments` arguments."""
    numbers = ", ".join(f"${i}" for i in range(1, arguments + 1))
    return f"SELECT * FROM pg_temp.{name}({numbers})"


def lock_key(key: str) -> int:
    """A stable signed 64-bit advisory lock key for a recipient key."""
    digest = hashlib.sha256(b"sendguard:recipient:" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_MAX_ARGUMENTS = 32767
"""Bound parameters PostgreSQL's protocol carries in one statement."""


def _together(writes: Sequence[Write]) -> Write:
    """One statement running `writes`: the others as data-modifying WITH queries of the last."""
    if len(writes) == 1:
        return writes[0]
    ctes = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(writes[:-1]))
    return f"WITH {ctes} {writes[-1][0]}", [value for _, args in writes for value in args]


class _Tx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @property
    def conn(self) -> asyncpg.Connection:
        """The connection the statements run on."""
        return self._conn

    def transaction(self) -> Any:
        """A transaction, or a savepoint inside the open one."""
        return self._conn.transaction()

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status: str = await self._conn.execute(numbered(sql), *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self._conn.fetch(numbered(sql), *args)
        return rows


class PostgresStore(SqlStore):
    """The shared store for several instances."""

    claim_lock = "FOR UPDATE SKIP LOCKED"
    marks_in_one_statement = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        timeout: float = 5.0,
        trace: Trace | None = None,
    ) -> None:
        """`trace` (tests, bench/statements.py): called with every statement the pool's
        connections send (transaction control included; the LISTEN connection's not)."""
        self._dsn = dsn
        self._schema = schema
        self._pool_size = pool_size
        self._timeout = timeout
        self._trace = trace
        # Server pids of pooled connections that may hold advisory locks (see `_reset`).
        self._may_hold_locks: set[int] = set()
        self._pool: ConnectionPool | None = None
        self._locks = KeyedLock()
        self._cache = MessageCache()
        self._listeners: list[Callable[[], None]] = []
        self._listener: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        # Why the last write failed, while the server refuses writes (disk full, I/O error,
        # read-only); None once a write succeeds. `check` answers with it.
        self.commit_failure: StoreUnavailable | None = None

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        self._pool = pool = ConnectionPool(
            self._new_connection,
            max_size=self._pool_size,
            wait=self._timeout,
            needs_reset=self._needs_reset,
            reset=self._reset,
        )
        try:
            conn = await pool.acquire()
            failed: BaseException | None = None
            try:
                await self._migrate(conn)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                await pool.release(conn, failed=failed)
        except _UNAVAILABLE as exc:
            await self.close()
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        self._watch = asyncio.create_task(self._keep_listening(), name="pg-listen")

    async def _new_connection(self) -> asyncpg.Connection:
        """A new pooled connection, set up (`_init_connection`)."""
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._timeout,
            command_timeout=self._timeout * 6,
            server_settings={
                "search_path": self._schema,
                "application_name": "sendguard",
                # Each statement reads a snapshot of its own, taken as it starts: the
                # decision's reads follow the recipient's lock (`_locked_reads`).
                "default_transaction_isolation": "read committed",
            },
        )
        try:
            await self._init_connection(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        """A new pooled connection: the functions of `_locked_reads` (in `pg_temp`, so each
        connection has those of the sendguard that made it), and the trace."""
        try:
            await conn.execute(_MAKE_LOCKED_READS)
        except asyncpg.PostgresError as exc:
            # A server that refuses even temporary objects (read-only, disk full): the
            # decision's reads go as statements of their own on this connection
            # (`recipient_reads`); what refuses writes is told by the writes.
            log.warning("locked reads unavailable on a connection", error=str(exc))
        trace = self._trace
        if trace is not None:
            conn.add_query_logger(lambda record: trace(record.query))

    def _needs_reset(self, conn: asyncpg.Connection) -> bool:
        """Whether a connection going back to the pool may hold advisory locks (`_reset`)."""
        return conn.get_server_pid() in self._may_hold_locks

    async def _reset(self, conn: asyncpg.Connection) -> None:
        """Make a connection going back to the pool like a fresh one.

        asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
        RESET ALL` on every release: a round trip and four statements per store call. The
        store opens no cursors, LISTENs on a connection of its own and changes no setting, and
        a transaction ends with its block (the pool terminates a connection left in one), so
        only advisory locks can be left over: those of a `lock_recipients` or a migration
        whose unlock did not complete.
        """
        pid = conn.get_server_pid()
        if pid in self._may_hold_locks:
            await conn.execute("SELECT pg_advisory_unlock_all()")
            self._may_hold_locks.discard(pid)

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        self._may_hold_locks.add(conn.get_server_pid())
        await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS sendguard_schema (version BIGINT NOT NULL)"
            )
            current = await conn.fetchval("SELECT max(version) FROM sendguard_schema") or 0
            if current > len(MIGRATIONS):
                raise StoreUnavailable(
                    f"the database schema is version {current}, newer than this sendguard "
                    f"knows ({len(MIGRATIONS)}); upgrade sendguard"
                )
            for version in range(current, len(MIGRATIONS)):
                async with conn.transaction():
                    await conn.execute(MIGRATIONS[version])
                    await conn.execute("INSERT INTO sendguard_schema VALUES ($1)", version + 1)
                log.info("migrated", schema=self._schema, version=version + 1)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
            self._may_hold_locks.discard(conn.get_server_pid())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._drop_listener()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(*_UNAVAILABLE):
                await pool.close()

    async def check(self) -> None:
        async def job(tx: Any) -> None:
            await tx.fetch("SELECT 1")

        async def rewrite_version(tx: Any) -> None:
            await tx.execute(
                "UPDATE sendguard_schema SET version = version"
                " WHERE version = (SELECT max(version) FROM sendguard_schema)"
            )

        if self.commit_failure is not None:
            # An instance that looks unready gets no mail from a load balancer, so nothing
            # else might write: a write of its own tells whether the server takes them again.
            with contextlib.suppress(StoreUnavailable):
                await self._write(rewrite_version)
        failure = self.commit_failure
        if failure is not None:
            raise StoreUnavailable(str(failure), kind=failure.kind)
        await self._read(job)

    async def recover(self, now: datetime) -> int:
        # Other instances may be alive: only the claims of owners that are certainly gone (a
        # process of this host, boot and pid namespace that no longer runs: owner.py) are
        # released, so a restarted instance sends at once what it had claimed before it died;
        # the others' are taken over when their lease ends. Pieces of a large content whose
        # message never committed (sql_content.py) likewise, otherwise on prune.
        del now
        released = await self._release_claims_of(owner_gone)
        await sql_content.forget_unfinished(self._write, shared=True)
        return released

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    # LISTEN ----------------------------------------------------------------------------------
    def _on_notify(self, *_: object) -> None:
        for callback in self._listeners:
            callback()

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            conn, self._listener = self._listener, None
            with contextlib.suppress(*_UNAVAILABLE):
                await asyncio.wait_for(conn.close(), self._timeout)

    async def _keep_listening(self) -> None:
        """Hold a LISTEN connection; reconnect when it is lost (the database restarted)."""
        while True:
            if self._listener is None or self._listener.is_closed():
                await self._drop_listener()
                try:
                    self._listener = await self._listen()
                    self._on_notify()  # anything announced while we were away
                except _UNAVAILABLE as exc:
                    log.warning("LISTEN connection unavailable; retrying", error=str(exc))
            await asyncio.sleep(1.0)

    async def _listen(self) -> asyncpg.Connection:
        """A new connection listening on CHANNEL. Closing the store cancels this task at any
        moment; a connection made meanwhile is closed, never left to the garbage collector."""
        connecting = asyncio.ensure_future(
            asyncpg.connect(
                self._dsn, timeout=self._timeout, server_settings={"search_path": self._schema}
            )
        )
        try:
            conn = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            with contextlib.suppress(*_UNAVAILABLE):
                (await connecting).terminate()
            raise
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        return conn

    # transactions ----------------------------------------------------------------------------
    async def _acquire(self) -> tuple[ConnectionPool, asyncpg.Connection]:
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        pool = self._pool
        try:
            return pool, await pool.acquire()
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            # Any refusal while connecting (login refused, database missing, server starting
            # up or shutting down) means "not now" to the caller.
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        held = _HELD.get()
        if held is not None:
            await self._take_pending(held)
            yield held
            return
        pool, conn = await self._acquire()
        failed: BaseException | None = None
        try:
            yield conn
        except BaseException as exc:
            failed = exc
            raise
        finally:
            with contextlib.suppress(*_UNAVAILABLE):
                await pool.release(conn, failed=failed)

    async def _job(self, job: Job[T], *, transaction: bool) -> T:
        """`job` on the connection of the block it runs in (`lock_recipients`), else on a
        pooled one; in a transaction if asked. What `_connection` does, without a context
        manager's generator and its calls: `_read`, `_write` and `_write_one` are most of the
        store's calls."""
        held = _HELD.get()
        if held is not None:
            await self._take_pending(held)
            if transaction:
                async with held.transaction():
                    return await job(_Tx(held))
            return await job(_Tx(held))
        pool, conn = await self._acquire()
        failed: BaseException | None = None
        try:
            if transaction:
                async with conn.transaction():
                    return await job(_Tx(conn))
            return await job(_Tx(conn))
        except BaseException as exc:
            failed = exc
            raise
        finally:
            with contextlib.suppress(*_UNAVAILABLE):
                await pool.release(conn, failed=failed)

    async def _write(self, job: Job[T]) -> T:
        try:
            result = await self._job(job, transaction=True)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(str(exc)) from exc
        except _REFUSALS as exc:
            raise self._write_refused(exc) from exc
        self.commit_failure = None
        return result

    async def _write_one(self, job: Job[T]) -> T:
        # Outside a transaction each statement commits on its own, durably before its answer
        # (synchronous_commit as the server has it): no BEGIN and COMMIT round trips.
        try:
            result = await self._job(job, transaction=False)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(str(exc)) from exc
        except _REFUSALS as exc:
            raise self._write_refused(exc) from exc
        self.commit_failure = None
        return result

    def _write_refused(self, exc: asyncpg.PostgresError) -> StoreUnavailable:
        """The StoreUnavailable of a write the server refused; kept for `check`."""
        self.commit_failure = failure = _refusal(exc)
        return StoreUnavailable(str(failure), kind=failure.kind)

    async def _run_all(self, tx: Tx, writes: Sequence[Write]) -> None:
        # As few statements as the bound parameters allow (one, unless a message has hundreds
        # of recipients): the others as data-modifying WITH queries of the last. They run on
        # one snapshot and see none of each other's rows, which `_run_all`'s callers promise
        # not to need; foreign keys are checked at the end of the statement.
        pending = _PENDING.get()
        held = _HELD.get()
        if pending is None or not pending.sent or not isinstance(tx, _Tx) or tx.conn is not held:
            await self._run_groups(tx, writes)
            return
        # The commit of a lone recipient's block (a message's intake): its last statement
        # hands the recipient's lock over to the transaction, which holds it until its commit
        # is durable and seen, and gives up the session's lock: no unlock round trip after.
        await self._run_groups(tx, [*writes, (_HANDOVER, [lock_key(pending.key)])])
        # Given up: a later statement of the block takes the lock again (`_take_pending`),
        # and the block's end has nothing to unlock unless one did.
        pending.sent = False

    async def _run_groups(self, tx: Tx, writes: Sequence[Write]) -> None:
        groups: list[list[Write]] = [[]]
        bound = 0
        for write in writes:
            if groups[-1] and bound + len(write[1]) > _MAX_ARGUMENTS:
                groups.append([])
                bound = 0
            groups[-1].append(write)
            bound += len(write[1])
        if len(groups) == 1:
            await tx.execute(*_together(groups[0]))
            return
        # Several statements: atomic together (a savepoint inside `_write`'s transaction).
        assert isinstance(tx, _Tx)
        async with tx.transaction():
            for group in groups:
                await tx.execute(*_together(group))

    def _claimable(self, at: int, limit: int) -> tuple[str, Sequence[Any], bool]:
        # Each kind of claimable delivery from its own partial index, rather than one bitmap
        # scan of both. A row's old versions stay in those indexes until a VACUUM (a claim and
        # `sent` change indexed columns), and a bitmap scan visits each in the table on every
        # claim: the cost grew with every delivery sent since the last VACUUM. A plain index
        # scan marks the entries of dead rows it meets as dead in the index, and later scans
        # (bitmap ones too) skip them there: those of `deliveries_sending` by the index scans
        # below, those of `deliveries_due` by this one's or by `next_due_at`'s, which the
        # dispatcher runs before it sleeps. Each branch locks at most `limit` rows; those
        # beyond the `limit` taken stay locked only until this statement commits (other
        # claims skip them meanwhile, as they skip the rows a claim takes).
        due = (
            "WITH due AS (SELECT id, due_at FROM deliveries"
            f" WHERE state IN {DUE_STATES_SQL} AND due_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?)"
            " ORDER BY due_at LIMIT ? FOR UPDATE SKIP LOCKED),"
            " expired AS (SELECT id, due_at FROM deliveries"
            " WHERE state = 'sending' AND lease_until < ?"
            " ORDER BY lease_until LIMIT ? FOR UPDATE SKIP LOCKED),"
            " released AS (SELECT id, due_at FROM deliveries"
            " WHERE state = 'sending' AND lease_until IS NULL LIMIT ? FOR UPDATE SKIP LOCKED)"
            " SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM expired"
            " UNION ALL SELECT * FROM released) AS claimable ORDER BY due_at"
        )
        return due, (at, at, limit, at, limit, limit), True

    async def _lease_and_mark(self, tx: Tx, lease: Write, at: int) -> list[Sequence[Any]]:
        # The transitions from the claim's own rows, as data-modifying WITH queries see them.
        sql, args = lease
        marked = SENDING_TRANSITIONS.format(
            "taken d WHERE d.state = 'sending' AND d.updated_at = ?"
        )
        return await tx.fetch(
            f"WITH taken AS ({sql}), marked AS ({marked}) SELECT * FROM taken", (*args, at, at)
        )

    async def _read(self, job: Job[T]) -> T:
        try:
            return await self._job(job, transaction=False)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL read failed: {exc}") from exc

    async def _notify(self, tx: Any) -> None:
        await tx.fetch(f"SELECT pg_notify('{CHANNEL}', '')")

    # serialisation ---------------------------------------------------------------------------
    def lock_recipients(
        self, recipients: Sequence[str], *, campaign: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        return self._locked(sorted({recipient_key(r) for r in recipients}), campaign)

    @asynccontextmanager
    async def _locked(self, keys: list[str], campaign: str | None) -> AsyncIterator[None]:
        """The recipients' locks, held on one connection that every store call of the block
        uses. A lone recipient's lock is taken by the block's first statement: by the
        decision's first read, `recipient_reads`, which reads with it the global pause and
        the campaign (one round trip, `_locked_reads`), else by `_take_pending`."""
        if _HELD.get() is not None:
            raise RuntimeError("lock_recipients does not nest")
        # In-process first, so waiting tasks of this instance do not each hold a connection.
        async with self._locks.hold(keys), self._connection() as conn:
            pid = conn.get_server_pid()
            self._may_hold_locks.add(pid)  # until the unlock completes
            pending: _Pending | None = None
            pause: list[GlobalPause] | None = []
            if len(keys) == 1:
                pending = _Pending(keys[0], campaign)
            else:
                try:
                    pause = await self._lock(conn, keys)
                except _UNAVAILABLE as exc:
                    raise StoreUnavailable(f"PostgreSQL lock failed: {exc}") from exc
            token = _HELD.set(conn)
            pending_token = _PENDING.set(pending)
            pause_token = _PAUSE.set(pause)
            campaigns_token = _CAMPAIGNS.set({})
            approvals_token = _APPROVALS.set({})
            try:
                yield
            finally:
                _APPROVALS.reset(approvals_token)
                _CAMPAIGNS.reset(campaigns_token)
                _PAUSE.reset(pause_token)
                _PENDING.reset(pending_token)
                _HELD.reset(token)
                if pending is not None and not pending.sent:
                    self._may_hold_locks.discard(pid)  # no statement ran: nothing to unlock
                else:
                    with contextlib.suppress(*_UNAVAILABLE):
                        await conn.execute("SELECT pg_advisory_unlock_all()")
                        self._may_hold_locks.discard(pid)

    async def _take_pending(self, conn: asyncpg.Connection) -> None:
        """Take the block's lone lock if no statement has yet: before any other of the block
        (with the pause, `_lock`)."""
        pending = _PENDING.get()
        if pending is None or pending.sent:
            return
        pending.sent = True
        try:
            pause = await self._lock(conn, [pending.key])
        except _UNAVAILABLE as exc:
            # Its callers outside `_read` and `_write` (`get_pause`) answer as they do.
            raise StoreUnavailable(f"PostgreSQL lock failed: {exc}") from exc
        kept = _PAUSE.get()
        if pause and kept is not None:
            kept.extend(pause)

    async def recipient_reads(
        self,
        recipient: str,
        *,
        history_since: datetime | None,
        events_since: datetime | None,
        copies: CopyQuery | None = None,
    ) -> RecipientReads:
        # The decision's first read, in a block whose lone lock no statement has taken yet:
        # the lock, these reads, the global pause and the campaign in one round trip.
        key = recipient_key(recipient)
        pending = _PENDING.get()
        if pending is None or pending.sent or pending.key != key:
            return await super().recipient_reads(
                recipient, history_since=history_since, events_since=events_since, copies=copies
            )
        _, args = recipient_reads_query(key, history_since, events_since, copies)
        campaign = pending.campaign
        name, _ = _LOCKED_READS[
            history_since is not None, events_since is not None, copies is not None, bool(campaign)
        ]
        args.append(lock_key(key))
        if campaign:
            args.append(campaign)
        call = _locked_reads_call(name, len(args))
        conn = _HELD.get()
        assert conn is not None
        pending.sent = True
        try:
            rows: list[Sequence[Any]] = await conn.fetch(call, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL read failed: {exc}") from exc
        except asyncpg.UndefinedFunctionError:
            # Not made on this connection (`_init_connection`): nothing ran, no lock taken.
            pending.sent = False
            return await super().recipient_reads(
                recipient, history_since=history_since, events_since=events_since, copies=copies
            )
        own: list[Sequence[Any]] = []
        pause = GlobalPause()
        found: Campaign | None = None
        approvals: list[tuple[int, ContentApproval]] = []
        for row in rows:
            kind = row[0]
            if kind is None or kind < _CAMPAIGN_ROW:  # None: a send of an unknown class
                own.append(row)
            elif kind == _PAUSE_ROW:
                pause = GlobalPause(bool(int(row[1])), codec.moment(row[5]), row[2], row[3])
            elif kind == _CAMPAIGN_ROW:
                found = self._campaign((row[1], row[2], int(row[3]), row[5], row[4]))
            else:
                approval = ContentApproval(
                    campaign or "", row[1], row[2], from_micros(row[5]), row[3]
                )
                approvals.append((int(row[4]), approval))
        kept = _PAUSE.get()
        if kept is not None:
            kept.append(pause)
        if campaign:
            campaigns, read = _CAMPAIGNS.get(), _APPROVALS.get()
            if campaigns is not None and read is not None:
                campaigns[campaign] = found
                approvals.sort(key=lambda numbered_approval: numbered_approval[0])
                read[campaign] = [approval for _, approval in approvals]
        return self._recipient_rows(key, rows=own)

    @staticmethod
    async def _lock(conn: asyncpg.Connection, keys: list[str]) -> list[GlobalPause] | None:
        """Take the recipients' locks in order; return the global pause read with the lock.

        A decision reads the pause (which another instance may set) after its policies. A
        lone recipient whose lock is free (the common case) is locked by a statement that
        reads the pause too, saving that read's round trip. The recipient's lock does not
        order pause changes, so this read is as good as one made later in the block, as
        long as no wait comes between: a lock that is taken (`pg_try_advisory_lock` says
        false) or several locks are waited for as before, and the pause is read after them.
        """
        if len(keys) == 1:
            row = await conn.fetchrow(_LOCK_AND_PAUSE, lock_key(keys[0]))
            assert row is not None
            if row[0]:
                if row[1] is None:  # never paused: no row
                    return [GlobalPause()]
                return [GlobalPause(bool(row[1]), codec.moment(row[2]), row[3], row[4])]
        for key in keys:
            await conn.execute("SELECT pg_advisory_lock($1)", lock_key(key))
        return None

    async def get_pause(self) -> GlobalPause:
        # Inside lock_recipients: the pause its lock statement read, once (`_lock`,
        # `_locked_reads`).
        held = _HELD.get()
        if held is not None:
            await self._take_pending(held)
        prefetched = _PAUSE.get()
        if prefetched:
            return prefetched.pop()
        return await super().get_pause()

    async def get_campaign(self, name: str) -> Campaign | None:
        # Inside lock_recipients (a decision): its content approvals with it, for human_hold's
        # `approvals` that follows, in one round trip instead of two. Read together they are
        # one snapshot, as good as two reads a moment apart: the recipient's lock orders
        # neither, and no wait comes between the two reads of a decision.
        approvals = _APPROVALS.get()
        if approvals is None:
            return await super().get_campaign(name)
        campaigns = _CAMPAIGNS.get()
        if campaigns is not None and name in campaigns:  # read with the lock: once
            return campaigns.pop(name)

        async def job(tx: Any) -> list[Sequence[Any]]:
            rows: list[Sequence[Any]] = await tx.fetch(_CAMPAIGN_AND_APPROVALS, (name,))
            return rows

        rows = await self._read(job)
        approvals[name] = [self._approval(name, r[5:]) for r in rows if r[5] is not None]
        return None if rows[0][0] is None else self._campaign(rows[0])

    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        # Read with the campaign's row in this decision's block (`get_campaign`), once, as
        # the pause read with the lock: a later call reads them again.
        read = _APPROVALS.get()
        if read is not None and campaign in read:
            return read.pop(campaign)
        return await super().approvals(campaign)


SCRATCH_SERVER = "SENDGUARD_TEST_PG"
"""The variable naming the server `scratch` stores live on (a DSN; default: the local one)."""
_DEFAULT_SCRATCH_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def scratch_dsn(environ: Mapping[str, str]) -> str:
    """The server scratch stores (tests) use: `SENDGUARD_TEST_PG`, else the local one."""
    return environ.get(SCRATCH_SERVER, _DEFAULT_SCRATCH_SERVER)


class PostgresBackend:
    """`postgresql://user@host:5432/db` (schemes `postgresql` and `postgres`)."""

    def from_url(self, url: str, settings: StoreSettings) -> PostgresStore:
        """The store on the server and database the URL names, in `settings.schema`."""
        return PostgresStore(
            url,
            schema=settings.schema,
            pool_size=settings.pool_size,
            timeout=settings.busy_timeout.total_seconds(),
        )

    @asynccontextmanager
    async def scratch(
        self, directory: Path, environ: Mapping[str, str]
    ) -> AsyncIterator[PostgresStore]:
        """A new schema on the server `SENDGUARD_TEST_PG` names, dropped on exit."""
        del directory
        dsn = scratch_dsn(environ)
        schema = f"t_{uuid.uuid4().hex[:16]}"
        try:
            yield self.from_url(dsn, StoreSettings(schema=schema, pool_size=4))
        finally:
            # Nothing to drop if the server could not be reached in the first place.
            with contextlib.suppress(*_UNAVAILABLE):
                conn = await asyncpg.connect(dsn, timeout=5)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                finally:
                    await conn.close()


BACKEND = PostgresBackend()
"""Registered under `sendguard.stores` as `postgresql` and `postgres`."""
