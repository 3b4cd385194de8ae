"""The PostgreSQL schema: the SQLite schema's tables and indexes, in PostgreSQL's types.

Both backends run the same SQL (sql_store.py), so their tables must match column for column;
deriving one DDL from the other keeps them from drifting. Times are BIGINT microseconds.
"""

from __future__ import annotations

import re

from sendguard.store.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS

SCHEMA_LOCK = 0x5E_6D_67_75_61_72_64  # advisory lock key held while migrating ("sendguard")


def to_postgres(ddl: str) -> str:
    """SQLite DDL in PostgreSQL types: 64-bit integers, BYTEA, BIGSERIAL row ids."""
    ddl = ddl.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
    ddl = re.sub(r"\bINTEGER\b", "BIGINT", ddl)
    return re.sub(r"\bBLOB\b", "BYTEA", ddl)


MIGRATIONS: tuple[str, ...] = tuple(to_postgres(m) for m in SQLITE_MIGRATIONS)
