"""Schema 2 folds the case of fact contacts already stored, keeping the newest fact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sendguard.store.sqlite_schema import MIGRATIONS, migrate


def test_existing_contacts_are_case_folded_newest_first(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v1.db", isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany(
        "INSERT INTO facts (key, contact, value, observed_at) VALUES (?, ?, ?, ?)",
        [
            ("deal:1", "Paula@Prospect.Example", "won", 2),
            ("deal:1", "paula@prospect.example", "lost", 1),
            ("deal:1", "", "open", 1),
            ("deal:2", "PETER@x.example", "won", 5),
        ],
    )
    migrate(conn)
    rows = conn.execute(
        "SELECT key, contact, value, superseded_by FROM facts ORDER BY key, contact"
    ).fetchall()
    assert rows == [
        ("deal:1", "", "open", None),
        ("deal:1", "paula@prospect.example", "won", None),
        ("deal:2", "peter@x.example", "won", None),
    ]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
