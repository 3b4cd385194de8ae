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


_HISTORY_SENT = """
    CREATE FUNCTION history_sent() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        UPDATE history SET sent = 1 WHERE delivery_id = NEW.id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER history_sent AFTER UPDATE OF state ON deliveries FOR EACH ROW
        WHEN (NEW.state = 'sent' AND OLD.state <> 'sent') EXECUTE FUNCTION history_sent();
"""
"""Schema 17's trigger in PostgreSQL's words (a function the trigger runs): what SQLite's
`history_sent` does, `history.sent` set when a delivery enters `sent`, in that statement."""


_SENT_IN_PLACE = """
    DROP INDEX history_recipient;
    CREATE INDEX history_recipient ON history(recipient_key, at);
    ALTER TABLE history SET (fillfactor = 90);
    DO $do$ BEGIN
        EXECUTE format($f$
            CREATE OR REPLACE FUNCTION history_sent() RETURNS trigger LANGUAGE plpgsql AS $b$
            BEGIN
                UPDATE %I.history SET sent = 1 WHERE delivery_id = NEW.id;
                RETURN NULL;
            END $b$$f$, current_schema());
    END $do$;
"""
"""Schema 18, PostgreSQL's alone: `history.sent` set by a HOT update. The trigger's update of
a send's history row changed a column of history_recipient (schema 17's covering index, made
for SQLite's reads), so PostgreSQL wrote a new row version elsewhere and an entry in each of
the table's three indexes for every `sent`; with `sent` in no index, and room left on each page
for the new version (fillfactor 90: a row is changed once, soon after it is written), the row
changes in place and no index is written. PostgreSQL reads a recipient's sends through the
narrow index and the rows (an index-only scan needs pages a VACUUM marked all-visible, which
the newest rows, those a decision reads most, seldom are). The function names its table by
the schema it was made in instead of `SET search_path FROM CURRENT`, which saved, set and
restored the setting on every call."""


def _postgres(version: int, ddl: str) -> str:
    """The PostgreSQL migration to `version` from SQLite's `ddl`: its types, and where the two
    dialects differ (a trigger), PostgreSQL's own text."""
    if version == 17:
        head, trigger, _ = ddl.partition("CREATE TRIGGER history_sent")
        assert trigger, "schema 17 makes the history_sent trigger"
        return to_postgres(head) + _HISTORY_SENT
    if version == 18:
        assert not ddl.strip(), "schema 18 is PostgreSQL's alone"
        return _SENT_IN_PLACE
    return to_postgres(ddl)


MIGRATIONS: tuple[str, ...] = tuple(
    _postgres(version, m) for version, m in enumerate(SQLITE_MIGRATIONS, start=1)
)
