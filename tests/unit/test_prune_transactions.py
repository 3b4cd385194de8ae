"""A prune deletes large contents a few at a time: freeing a content's pages takes time in
proportion to its size (about 9 ms a MiB), so a window of 2,000 messages of megabytes in one
transaction would hold SQLite's write lock for tens of seconds (found by the session 16
review: 120 messages of 3 MiB took 3.2 s in one transaction)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from sendguard.deliveries import Change
from sendguard.message import DeliveryState
from sendguard.store import sql_retention
from sendguard.store.sqlite import SQLiteStore
from tests.contract.test_store import T0, add

MIB = 1 << 20


async def test_large_contents_go_a_few_to_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_retention, "CONTENT_BYTES", 3 * MIB)
    statements: list[str] = []
    store = SQLiteStore(tmp_path / "big.db", trace=statements.append)
    await store.open()
    try:
        line = b"a line of a large newsletter, which the store keeps in pieces\r\n"
        big = b"Subject: big\r\n\r\n" + line * (5 * MIB // 2 // len(line))  # 2.5 MiB
        small = b"Subject: small\r\n\r\nhi\r\n"
        for content in (big, big, small, small, big, big):
            # A message whose delivery is done, and beside it one of `content` without
            # deliveries, received at the same time (both forgotten by the prune).
            message, (new,) = await add(store, recipients=("a@example.org",))
            await store.change(new.id, Change(DeliveryState.SENT, "250 ok", T0))
            beside = replace(message, id=message.id + "x", size=len(content))
            await store.add_message(beside, content, [])
        # Pieces of four messages that never committed (a process killed while writing).
        conn = sqlite3.connect(tmp_path / "big.db")
        for n in range(4):
            conn.execute(
                "INSERT INTO content_chunks (message_id, part, seq, data, owner, written_at)"
                " VALUES (?, 0, 0, ?, 'gone:1', 0)",
                (f"lost{n}", b"x" * MIB),
            )
        conn.commit()
        conn.close()
        statements.clear()
        await store.prune(T0 + timedelta(days=90))
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "big.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM content_chunks").fetchone() == (0,)
    finally:
        conn.close()
    messages = [s for s in statements if re.match(r"\s*DELETE FROM messages ", s)]
    # In key order, sizes s B s | B s s s s s | B s | B (B: 2.5 MiB, s: small): a run ends
    # where the next content would take it past 3 MiB.
    assert len(messages) == 4, messages
    unreferenced = [s for s in statements if "DELETE FROM content_chunks WHERE (" in s]
    assert len(unreferenced) == 2  # four lost pieces of 1 MiB, three at most a transaction
