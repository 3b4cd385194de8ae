"""SQLite's one writer and a large content: its pieces are committed one per batch, and small
messages committing meanwhile get batches of their own between them (sql_content.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sendguard.deliveries import NewDelivery
from sendguard.ids import new_id
from sendguard.store.sql_content import CHUNK
from sendguard.store.sqlite import SQLiteStore
from sendguard.verdict import Verdict
from tests.contract.test_store import S, decision, make_message

PIECES = 8


async def test_small_messages_commit_between_the_pieces_of_a_large_one(tmp_path: Path) -> None:
    seen: list[str] = []
    store = SQLiteStore(tmp_path / "s.db", trace=seen.append)
    await store.open()
    try:
        big = make_message()
        content = b"y" * (CHUNK * PIECES)
        news = [NewDelivery(new_id(), "a@example.org", S.HELD, "h", decision(Verdict.hold("r")))]
        seen.clear()
        adding = asyncio.create_task(store.add_message(big, content, news))
        small_ids = []
        while not adding.done():
            small = make_message()
            small_ids.append(small.id)
            await store.add_message(small, b"Subject: s\r\n\r\nsmall\r\n", [])
        await adding
        assert await store.message_content(big.id) == content
    finally:
        await store.close()

    # Each batch: BEGIN IMMEDIATE ... COMMIT. Which writes did each hold?
    batches: list[list[str]] = []
    for statement in seen:
        if statement.startswith("BEGIN"):
            batches.append([])
        elif batches and not statement.startswith("COMMIT"):
            batches[-1].append(statement)
    kinds = [
        ["piece" if "content_chunks" in s else "message" for s in batch if "INSERT" in s]
        for batch in batches
    ]
    with_piece = [i for i, kind in enumerate(kinds) if "piece" in kind]
    # One piece per batch, never two: no write grows with the content.
    assert len(with_piece) == PIECES
    assert all(kinds[i].count("piece") == 1 for i in with_piece)
    # Small messages committed while the pieces were being written (in batches between them,
    # or beside one piece), and the large message's own row came after its last piece.
    between = [
        i
        for i, kind in enumerate(kinds)
        if with_piece[0] < i < with_piece[-1] and "message" in kind
    ]
    assert len(between) >= 2
    # (The small messages have no deliveries: the one batch that writes some is the large's.)
    (big_row,) = [i for i, batch in enumerate(batches) if any("deliveries" in s for s in batch)]
    assert big_row > with_piece[-1]
