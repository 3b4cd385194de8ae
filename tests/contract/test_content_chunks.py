"""A large content in pieces (sql_content.py), on every SQL backend: written before its message
commits, invisible and removed if the message never commits, pruned with its message."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from sendguard.deliveries import Change, IdempotencyRecord, NewDelivery
from sendguard.errors import Conflict
from sendguard.esp_request import EspRequest
from sendguard.ids import new_id
from sendguard.store import sql_content
from sendguard.store.base import Store
from sendguard.store.sql_content import CHUNK
from sendguard.store.sql_store import SqlStore, Tx
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, S, decision, make_message

BIG = (bytes(range(256)) * (CHUNK // 256))[:CHUNK] * 2 + b"tail\r\n"  # three pieces


def sql(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        pytest.skip("pieces are how the SQL backends keep a large content")
    return store


async def pieces(
    store: SqlStore, message_id: str | None = None, part: int = sql_content.CONTENT
) -> list[Sequence[Any]]:
    """(message_id, seq, length) of the stored pieces of `part`, of one message or all."""

    async def job(tx: Tx) -> list[Sequence[Any]]:
        where, args = (" AND message_id = ?", (part, message_id)) if message_id else ("", (part,))
        return await tx.fetch(
            f"SELECT message_id, seq, length(data) FROM content_chunks WHERE part = ?{where}"
            " ORDER BY message_id, seq",
            args,
        )

    return await store._read(job)


def gone_owner() -> str:
    """The owner name of a process of this host that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{socket.gethostname()}:{done.stdout.strip()}"


async def unfinished(store: SqlStore, message_id: str, owner: str) -> None:
    """A piece as a process leaves it that was killed before its message committed."""

    async def job(tx: Tx) -> None:
        await tx.execute(
            "INSERT INTO content_chunks (message_id, part, seq, data, owner, written_at)"
            " VALUES (?, 0, 0, ?, ?, ?)",
            (message_id, b"x" * 1000, owner, int(T0.timestamp() * 1_000_000)),
        )

    await store._write(job)


async def test_a_large_content_is_kept_in_pieces_and_read_back_whole(store: Store) -> None:
    backend = sql(store)
    message = make_message()
    news = [NewDelivery(new_id(), "a@example.org", S.HELD, "h", decision(Verdict.hold("r")))]
    await store.add_message(message, BIG, news)
    assert [(row[1], row[2]) for row in await pieces(backend, message.id)] == [
        (0, CHUNK),
        (1, CHUNK),
        (2, 6),
    ]
    assert await store.message_content(message.id) == BIG
    # A content of at most one piece stays in its message's row.
    small = make_message()
    await store.add_message(small, BIG[:CHUNK], news[:0])
    assert await pieces(backend, small.id) == []
    assert await store.message_content(small.id) == BIG[:CHUNK]


async def test_pieces_of_a_message_that_never_committed_are_removed(store: Store) -> None:
    backend = sql(store)
    kept = make_message()
    held = NewDelivery(new_id(), "a@example.org", S.HELD, "h", decision(Verdict.hold("r")))
    await store.add_message(kept, BIG, [held])  # waits for review: not pruned
    dead, alive = new_id(), new_id()
    await unfinished(backend, dead, gone_owner())
    await unfinished(backend, alive, sql_content.process_owner())
    with pytest.raises(Conflict):
        await store.message_content(dead)  # never visible: no message refers to it

    await store.recover(T0)
    left = {row[0] for row in await pieces(backend)}
    # A process that is gone left them: removed. This process's own may be a message being
    # written right now where the store is shared (PostgreSQL): kept until the prune.
    assert dead not in left
    assert kept.id in left
    assert await store.message_content(kept.id) == BIG

    await store.prune(T0 + timedelta(days=90))
    assert {row[0] for row in await pieces(backend)} == {kept.id}
    assert await store.message_content(kept.id) == BIG


async def test_pieces_go_with_their_pruned_message(store: Store) -> None:
    backend = sql(store)
    message = make_message()
    delivery = NewDelivery(new_id(), "a@example.org", S.QUEUED, "ok", decision(Verdict.forward()))
    await store.add_message(message, BIG, [delivery])
    await store.change(delivery.id, Change(S.SENT, "ok", T0))
    assert len(await pieces(backend, message.id)) == 3
    assert await store.prune(T0 + timedelta(days=90)) == 1
    assert await pieces(backend, message.id) == []


async def test_a_refused_message_leaves_no_pieces(store: Store) -> None:
    backend = sql(store)
    first = make_message()
    await store.add_message(first, b"x", [], IdempotencyRecord("key-big", first.id, b"{}"))
    again = make_message()
    with pytest.raises(Conflict):
        await store.add_message(again, BIG, [], IdempotencyRecord("key-big", again.id, b"{}"))
    assert await store.get_message(again.id) is None
    assert await pieces(backend, again.id) == []


async def test_a_large_esp_request_body_is_kept_in_pieces_too(store: Store) -> None:
    backend = sql(store)
    message = dataclasses.replace(make_message(), ingress="sendgrid")
    request = EspRequest("sendgrid", b'{"content": "' + BIG.hex().encode()[: 3 * CHUNK] + b'"}')
    new = NewDelivery(new_id(), "a@example.org", S.QUEUED, "ok", decision(Verdict.forward()), T0)
    await store.add_message(message, BIG, [new], esp_request=request)
    assert len(await pieces(backend, message.id, sql_content.ESP_BODY)) == 4
    assert len(await pieces(backend, message.id)) == 3
    assert await store.esp_request(message.id) == request
    assert await store.message_content(message.id) == BIG
    await store.change(new.id, Change(S.SENT, "ok", T0))
    await store.prune(T0 + timedelta(days=90))
    assert await store.esp_request(message.id) is None
    assert await pieces(backend, message.id, sql_content.ESP_BODY) == []
