"""An SQLite store at an old schema version, the start of an upgrade test (the SQLite side of
`tests.support.postgres.postgres_at_version`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from sendguard.store.sqlite_schema import MIGRATIONS, statements


def sqlite_at_version(
    path: Path, version: int, rows: Sequence[tuple[str, Sequence[object]]] = ()
) -> None:
    """A database file at `path` made by the first `version` SQLite migrations, as a sendguard
    of that schema left it (`user_version` included), with `rows` written (SQL with `?`
    placeholders and their arguments)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for migration in MIGRATIONS[:version]:
            for statement in statements(migration):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        for sql, args in rows:
            conn.execute(sql, args)
    finally:
        conn.close()
