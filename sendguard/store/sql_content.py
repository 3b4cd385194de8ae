"""A large message content, written and read in pieces (`content_chunks`), in SQL for every
SQL backend.

Why: SQLite has one writer, and a message's row is committed in one batch of the group
commit. A 20 MB content in that row made the batch take hundreds of milliseconds (copying
20 MB into overflow pages and WAL frames, then the fsync), and every small message committing
meanwhile waited for it. Now a content over `CHUNK` is written as pieces of `CHUNK` octets,
each its own write job (its own short batch, between other messages' commits), before the
message's row; no write job grows with the message. The body of the ESP request a message came
in as (`esp_requests`, kept for pass-through) is kept the same way, as `part` ESP_BODY.

Visibility and durability: the pieces are keyed by the message's id, which nothing refers to
until the message's own transaction commits its row (content empty, `chunks` = how many
pieces) with its deliveries. Each piece is awaited durable before the next is written, so by
the time that row commits (and SMTP answers 250, HTTP 202) every piece is on disk. Pieces
whose message never committed (the process was killed, the commit failed) are unreferenced:
`forget_unfinished` removes them on `recover` (of owners that are gone), and `PRUNE_*` on
prune (those of pruned messages, and any unreferenced piece older than the cutoff).

Reading: one point read per piece, each a `_scan` (SQLite: on a reader thread, where
sqlite3 holds the GIL while it copies a blob's overflow pages: ~1 ms per piece instead of
10-30 ms for 20 MB at once), joined once.

PostgreSQL has no single writer (a big insert occupies one pooled connection, the others
commit meanwhile) and asyncpg encodes and decodes a bytea with a copy; the same pieces are
used there too, so both backends store a content alike and no statement's parameter or
result is 20 MB.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sendguard.errors import Conflict
from sendguard.owner import owner_gone, process_owner

if TYPE_CHECKING:
    from sendguard.store.sql_store import Job, Tx

T = TypeVar("T")
Run = Callable[["Job[T]"], Awaitable[T]]

CHUNK = 1 << 20
"""Octets per piece; a content up to this size stays in its message's row."""
CONTENT = 0
"""The `part` of a message's content."""
ESP_BODY = 1
"""The `part` of the body of the ESP request a message came in as (`esp_requests`)."""

_UNREFERENCED = "NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = content_chunks.message_id)"

UNREFERENCED_BEFORE = f"{_UNREFERENCED} AND written_at < ?"
"""Pieces of a message that never committed, written before the prune cutoff (one `?`).
`written_at` follows the piece's data in its row: tested after the look-up of the message, it
is read (past up to a megabyte of overflow pages) only for the pieces of no message."""

KEY = ("message_id", "part", "seq")
"""The columns naming a piece."""


def prune_of(messages: str) -> str:
    """The statement deleting the pieces of the messages `messages` selects (a SELECT of ids,
    with its own placeholders)."""
    return f"DELETE FROM content_chunks WHERE message_id IN ({messages})"


def chunked(content: bytes) -> bool:
    """Whether `content` is stored in pieces rather than in its message's row."""
    return len(content) > CHUNK


async def write_chunks(
    write: Run[None], message_id: str, content: bytes, now: int, part: int = CONTENT
) -> int:
    """Write `content` as pieces of `part` of message `message_id`, each in its own durable
    write job (`write`: the store's `_write_one`), one after another; return how many."""
    owner = process_owner()
    count = 0
    for start in range(0, len(content), CHUNK):
        piece = content[start : start + CHUNK]
        seq = count

        async def job(tx: Tx, seq: int = seq, piece: bytes = piece) -> None:
            # Written again as it is if a failed batch is retried.
            await tx.execute(
                "INSERT INTO content_chunks (message_id, part, seq, data, owner, written_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, part, seq) DO UPDATE SET"
                " data = excluded.data, owner = excluded.owner,"
                " written_at = excluded.written_at",
                (message_id, part, seq, piece, owner, now),
            )

        await write(job)
        count += 1
    return count


async def drop_chunks(write: Run[None], message_id: str) -> None:
    """Delete the pieces of a message whose own transaction certainly did not commit."""

    async def job(tx: Tx) -> None:
        await tx.execute(
            f"DELETE FROM content_chunks WHERE message_id = ? AND {_UNREFERENCED}", (message_id,)
        )

    await write(job)


async def read_chunks(
    scan: Run[Sequence[Any] | None], message_id: str, count: int, part: int = CONTENT
) -> bytes:
    """`part` of message `message_id` from its `count` pieces, one read each (`scan`: the
    store's `_scan`)."""
    pieces: list[bytes] = []
    for seq in range(count):

        async def job(tx: Tx, seq: int = seq) -> Sequence[Any] | None:
            rows = await tx.fetch(
                "SELECT data FROM content_chunks WHERE message_id = ? AND part = ? AND seq = ?",
                (message_id, part, seq),
            )
            return rows[0] if rows else None

        row = await scan(job)
        if row is None:
            raise Conflict(f"message {message_id} has lost piece {seq} of part {part}")
        pieces.append(bytes(row[0]))
    return b"".join(pieces)


async def forget_unfinished(write: Run[int], *, shared: bool) -> int:
    """Delete the pieces of messages that never committed, written by processes that are gone
    (`shared` false: this process alone uses the store, so by any); return how many."""

    async def job(tx: Tx) -> int:
        owners = [
            row[0]
            for row in await tx.fetch(
                f"SELECT DISTINCT owner FROM content_chunks WHERE {_UNREFERENCED}"
            )
        ]
        removed = 0
        for owner in owners:
            if not shared or owner_gone(owner):
                removed += await tx.execute(
                    f"DELETE FROM content_chunks WHERE owner = ? AND {_UNREFERENCED}", (owner,)
                )
        return removed

    return await write(job)
