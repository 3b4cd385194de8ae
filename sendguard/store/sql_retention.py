"""Retention (`Pruning`): forgetting what retention no longer needs.

A prune never holds the store's write lock for long, whatever the size of the tables (on
SQLite one writer serves every worker and instance: a prune that deleted a million rows, or
only looked through them, in one transaction kept every intake waiting for as long). Each
table is walked in windows of at most `WINDOW` rows in key order by reads (off the event loop
and off the writer), and each window with something to forget is deleted by a transaction of
its own that touches that window's key range only and checks the condition again (what
changed since the read is judged as it is now). A delivery goes in one transaction with its
transitions, outcomes and waits; a message only once no delivery refers to it (checked in the
deleting transaction). A prune cut short (a crash, a full disk) has forgotten some windows and
not others, which the next prune completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sendguard.clock import to_micros
from sendguard.pruning import PruneCutoffs
from sendguard.store import sql_content
from sendguard.store.sql_jobs import Job, SqlJobs, Tx

Key = tuple[Any, ...]

WINDOW = 2_000
"""Rows a prune's read looks at, and a prune's transaction deletes, at most (in key order)."""

CONTENT_BYTES = 8 << 20
"""Octets of content a prune's transaction deletes at most (freeing a large content's pages
takes about 9 ms a MiB on the build machine), unless one message alone is larger: it goes in a
transaction of its own."""

FINAL_STATES = ("sent", "failed", "dropped")

# A message nothing refers to any more: no delivery of its own, and none of an edited copy of
# it (a message a reviewer corrected stays while deliveries of its edited copy exist).
_ORPHAN = (
    "received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)"
    " AND NOT EXISTS (SELECT 1 FROM edits e JOIN deliveries d ON d.message_id = e.edited_message_id"
    " WHERE e.message_id = m.id OR e.origin_message_id = m.id)"
)


class SqlRetention(SqlJobs):
    """Pruning by retention's cutoffs."""

    async def prune(self, before: datetime | PruneCutoffs) -> int:
        cut = before if isinstance(before, PruneCutoffs) else PruneCutoffs.uniform(before)
        gone = 0
        if cut.deliveries is not None:
            gone = await self._prune_deliveries(to_micros(cut.deliveries))
        # Send history outlives its deliveries when a policy counts further back than the
        # timeline is kept, so it goes by its own time only. Suppressions never go.
        # Event types some policy reads at any age (a purchase) outlive the events' cutoff.
        kept = sorted(cut.events_kept)
        spare = f" AND type NOT IN ({', '.join('?' * len(kept))})" if kept else ""
        for table, keys, column, cutoff, extra in (
            ("history", ("delivery_id",), "at", cut.history, ""),
            ("events", ("id",), "at", cut.events, spare),
            ("facts", ("key", "contact"), "observed_at", cut.facts, ""),
            ("idempotency", ("key",), "created_at", cut.idempotency, ""),
        ):
            if cutoff is None:
                continue
            old_args = (to_micros(cutoff), *(kept if extra else ()))
            await self._forget_windows(table, keys, f"{column} < ?{extra}", old_args)
        return gone

    async def _prune_deliveries(self, cutoff: int) -> int:
        gone = 0
        try:
            for state in FINAL_STATES:  # each state's rows in id order (deliveries_state)
                scope = ("state = ?", (state,))
                old = ("updated_at < ?", (cutoff,))
                async for first, last in self._windows("deliveries", ("id",), *scope, *old):
                    gone += await self._write(_forget_deliveries(state, first[0], last[0], cutoff))
            # A message's size stands for its content and its ESP request's body.
            messages = self._windows("messages m", ("id",), "", (), _ORPHAN, (cutoff,), "m.size")
            async for first, last in messages:
                await self._write(_forget_messages(first[0], last[0], cutoff))
            await self._forget_windows(
                "content_chunks",
                sql_content.KEY,
                sql_content.UNREFERENCED_BEFORE,
                (cutoff,),
                str(sql_content.CHUNK),  # a piece is at most that
            )
        finally:
            self._cache.clear()  # messages may be gone
        return gone

    async def _forget_windows(
        self,
        table: str,
        keys: tuple[str, ...],
        condition: str,
        args: tuple[Any, ...],
        size: str | None = None,
    ) -> None:
        """Delete the rows of `table` meeting `condition`, a window at a time."""
        async for first, last in self._windows(table, keys, "", (), condition, args, size):
            span, span_args = _span(keys, first, last)
            sql = f"DELETE FROM {table} WHERE {span} AND {condition}"
            await self._write(_statement(sql, (*span_args, *args)))

    async def _windows(
        self,
        table: str,
        keys: tuple[str, ...],
        scope: str,
        scope_args: tuple[Any, ...],
        condition: str,
        condition_args: tuple[Any, ...],
        size: str | None = None,
    ) -> AsyncIterator[tuple[Key, Key]]:
        """Yield (first, last): the keys of the first and the last row meeting `condition`
        in each window of at most WINDOW rows of `table` meeting `scope`, in key order (a
        window without such a row yields nothing). Each window is one read off the loop.

        With `size` (an expression of a row's content octets), a window's rows are yielded in
        runs of at most CONTENT_BYTES (a row larger than that alone)."""
        columns = ", ".join(keys)
        after: Key | None = None
        while True:
            where = [scope] if scope else []
            args: list[Any] = list(scope_args)
            if after is not None:
                where.append(f"({columns}) > ({', '.join('?' * len(keys))})")
                args.extend(after)
            sql = (
                f"SELECT {columns}, CASE WHEN {condition} THEN 1 ELSE 0 END, {size or 0}"
                f" FROM {table}"
                f"{' WHERE ' + ' AND '.join(where) if where else ''}"
                f" ORDER BY {columns} LIMIT {WINDOW}"
            )

            async def read(tx: Tx, sql: str = sql, args: list[Any] = args) -> list[Sequence[Any]]:
                return await tx.fetch(sql, [*condition_args, *args])

            rows = await self._scan(read)
            if not rows:
                return
            for run in _runs(rows, len(keys)):
                yield run
            if len(rows) < WINDOW:
                return
            after = tuple(rows[-1][: len(keys)])


def _runs(rows: Sequence[Sequence[Any]], keys: int) -> list[tuple[Key, Key]]:
    """The (first, last) keys of runs of the rows that met the condition (each row: its keys,
    1 if it met it, its octets), each run of at most CONTENT_BYTES unless one row is more."""
    runs: list[tuple[Key, Key]] = []
    first: Key | None = None
    last: Key = ()
    octets = 0
    for row in rows:
        if not row[keys]:
            continue
        key, size = tuple(row[:keys]), int(row[keys + 1] or 0)
        if first is not None and octets + size > CONTENT_BYTES:
            runs.append((first, last))
            first = None
        if first is None:
            first, octets = key, 0
        last, octets = key, octets + size
    if first is not None:
        runs.append((first, last))
    return runs


def _span(keys: tuple[str, ...], first: Key, last: Key) -> tuple[str, list[Any]]:
    """The condition of the rows whose keys lie from `first` to `last`, and its arguments."""
    columns = ", ".join(keys)
    marks = ", ".join("?" * len(keys))
    return f"({columns}) >= ({marks}) AND ({columns}) <= ({marks})", [*first, *last]


def _statement(sql: str, args: Sequence[Any]) -> Job[int]:
    """The job running one statement."""

    async def job(tx: Tx) -> int:
        return await tx.execute(sql, args)

    return job


def _forget_deliveries(state: str, first: str, last: str, cutoff: int) -> Job[int]:
    """The job deleting one window of done deliveries with their timelines and waits."""
    done = "state = ? AND id >= ? AND id <= ? AND updated_at < ?"
    ids = f"SELECT id FROM deliveries WHERE {done}"
    args = (state, first, last, cutoff)

    async def job(tx: Tx) -> int:
        for table in ("transitions", "outcomes", "waits"):
            await tx.execute(f"DELETE FROM {table} WHERE delivery_id IN ({ids})", args)
        return await tx.execute(f"DELETE FROM deliveries WHERE {done}", args)

    return job


def _forget_messages(first: str, last: str, cutoff: int) -> Job[None]:
    """The job deleting one window of messages nothing refers to any more, with their
    requirements, ESP requests and pieces."""
    orphans = f"SELECT id FROM messages m WHERE id >= ? AND id <= ? AND {_ORPHAN}"
    args = (first, last, cutoff)

    async def job(tx: Tx) -> None:
        await tx.execute(f"DELETE FROM requirements WHERE message_id IN ({orphans})", args)
        await tx.execute(f"DELETE FROM esp_requests WHERE message_id IN ({orphans})", args)
        await tx.execute(sql_content.prune_of(orphans), args)
        await tx.execute(f"DELETE FROM messages WHERE id IN ({orphans})", args)

    return job
