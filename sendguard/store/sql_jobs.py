"""How the shared SQL runs: each operation is a job a backend runs in one transaction.

Each operation is an `async def job(tx)` run in one transaction by the backend: SQLite drives it
on its database thread inside a group-committed batch, PostgreSQL on a pooled connection (a
job that writes with one statement, `_write_one`, there without BEGIN and COMMIT: the
statement commits on its own).
Statements use `?` placeholders; a backend rewrites them if its driver wants others. Times are
integer microseconds since the epoch in every backend, so comparisons are exact and alike.

Reads come in two kinds. A point read (`_read`: a row by key, an index range of a bounded
number of rows) may run on the event loop's thread. A read whose cost grows with the tables
(`_scan`: an aggregate such as `count_by_state` or `campaigns`, a listing, a whole page's
history) must not: a backend runs it where it cannot stall the event loop (SQLite: on a reader
thread; PostgreSQL: on a pooled connection, as every query). Lists of rows are fetched in one
statement per kind for a whole page, never one per row.

`SqlJobs` is what every part of `SqlStore` (one module per concern, see `sql_store.py`) builds
on and what a backend supplies; the statement helpers below are shared by the parts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from sendguard.store.message_cache import MessageCache

T = TypeVar("T")


class Tx(Protocol):
    """One open transaction, as the shared SQL sees it."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; return how many rows it changed."""
        ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run a query; return every row."""
        ...


Job = Callable[[Tx], Awaitable[T]]
Write = tuple[str, Sequence[Any]]
"""A statement and its arguments."""


class _Writes:
    """A Tx that keeps the statements it is given instead of running them, for writes whose
    results nobody reads (`execute` answers 0); `SqlStore._run_all` runs them later."""

    def __init__(self) -> None:
        self.statements: list[Write] = []

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        self.statements.append((sql, args))
        return 0

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise TypeError(f"a batch of writes reads nothing: {sql}")


async def _one(tx: Tx, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None:
    rows = await tx.fetch(sql, args)
    return rows[0] if rows else None


def _where(*filters: tuple[str, Any]) -> tuple[str, list[Any]]:
    """` WHERE a = ? AND b = ?` and its arguments, for the filters whose value is given."""
    given = [(clause, value) for clause, value in filters if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]


def _bounded_count(rows: str, args: list[Any], at_most: int | None) -> tuple[str, list[Any]]:
    """COUNT(*) of the rows a `SELECT 1 ...` yields, stopping at `at_most` when given: a
    threshold check then reads at most that many rows, however many match."""
    if at_most is None:
        return f"SELECT COUNT(*) FROM ({rows}) AS counted", args
    return f"SELECT COUNT(*) FROM ({rows} LIMIT ?) AS counted", [*args, max(at_most, 0)]


def _marks(count: int) -> str:
    return ",".join("?" * count)


class SqlJobs(ABC):
    """The seam between the shared SQL and a backend: how a job runs, and the lease both
    queues (deliveries, outbound webhook events) are claimed with."""

    #: appended to the claim query (PostgreSQL: "FOR UPDATE SKIP LOCKED")
    claim_lock = ""
    #: messages and content as committed (a backend's __init__ makes one)
    _cache: MessageCache

    @abstractmethod
    async def _write(self, job: Job[T]) -> T:
        """Run `job` in a read-write transaction and commit it durably."""

    async def _write_one(self, job: Job[T]) -> T:
        """Run `job`, which writes with one statement at most, and commit it durably.

        Its reads, before or after that statement, need not see one snapshot with it. A
        backend whose statements commit on their own (PostgreSQL outside a transaction) runs
        it without BEGIN and COMMIT; the others as `_write`.
        """
        return await self._write(job)

    async def _write_statement(self, job: Job[T], *, linger: bool = False) -> T:
        """Run `job`, which writes with exactly one statement (its reads need not share that
        statement's snapshot), and commit it durably. A backend that can run that statement
        as its own transaction (SQLite, alone in its batch) does; the others as `_write_one`.

        `linger`: its commit may wait a little for another write to share it (SQLite: up to
        `sqlite_db.LINGER`, see `SQLiteDatabase.write`); for a write whose caller answers
        nobody meanwhile (the `sent` after a send). The others commit it at once.
        """
        del linger
        return await self._write_one(job)

    async def _run_all(self, tx: Tx, writes: Sequence[Write]) -> None:
        """Run statements whose results nobody reads and none of which reads what another
        writes. A backend may send them as one statement (PostgreSQL: a WITH of them)."""
        for sql, args in writes:
            await tx.execute(sql, args)

    @abstractmethod
    async def _read(self, job: Job[T]) -> T:
        """Run a point read `job` in a read-only transaction."""

    async def _scan(self, job: Job[T]) -> T:
        """Run a read-only `job` that may touch many rows, off the event loop's thread.

        A backend whose reads already leave the loop free (asyncpg) runs it as `_read`.
        """
        return await self._read(job)

    async def _notify(self, tx: Tx) -> None:
        """Tell other instances that work became due now (PostgreSQL: NOTIFY)."""
        del tx

    def _lease(
        self,
        table: str,
        due: str,
        args: Sequence[Any],
        limit: int,
        owner: str,
        until: int,
        also: tuple[str, Sequence[Any]] = ("", ()),
        returning: str = "id",
        *,
        locked: bool = False,
    ) -> Write:
        """The statement leasing up to `limit` rows of `table` to `owner` until `until`.

        `due` selects the ids of the rows that are due, in the order they are taken (with
        `args`); `also` sets more columns in the same UPDATE. It returns `returning` of the
        rows taken (new values). Deliveries and outbound webhook events are claimed alike.
        `locked`: `due` locks the rows it selects itself (`claim_lock` is not appended).
        """
        lock = "" if locked else self.claim_lock
        return (
            f"UPDATE {table} SET owner = ?, lease_until = ?{also[0]}"
            f" WHERE id IN ({due} LIMIT ? {lock}) RETURNING {returning}",
            (owner, until, *also[1], *args, limit),
        )
