"""Opening a new SQLite database while another connection holds it (the workers of
`serve --workers N` open a new file together)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

from sendguard.store.sqlite_db import SQLiteDatabase


def test_a_new_file_held_by_another_connection_is_opened_once_it_is_let_go(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sendguard.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # as a sibling worker migrating the new file
    other.execute("CREATE TABLE sibling (x)")
    let_go = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    let_go.start()

    async def open_and_close() -> str:
        db = SQLiteDatabase(path, timedelta(seconds=5))
        await db.open()  # the switch to WAL met "database is locked" at once, and failed
        await db.close()
        return str(sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0])

    try:
        assert asyncio.run(open_and_close()) == "wal"
    finally:
        let_go.join()
        other.close()
