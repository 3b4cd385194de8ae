"""The `SignIns` role in SQL, for every SQL backend (mixed into `SqlStore`).

Sessions are rows of `review_sessions` keyed by their token's SHA-256 (schema 15). The
throttle keeps one row per key in `review_throttle`, its recent failures as a JSON list: an
attempt first upserts the rows of its keys (in key order), which on PostgreSQL locks them until
its transaction ends, so two attempts on one key, on any instances, are counted one after the
other (SQLite writes one transaction at a time anyway). Every write here touches these two
tables only: no transaction spans another concern, and nothing here runs per message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sendguard.clock import from_micros, to_micros
from sendguard.sign_ins import StoredSession, ThrottleKey
from sendguard.store.base import SignIns
from sendguard.store.sql_jobs import SqlJobs, Tx, _marks

_SESSION = (
    "SELECT token_hash, username, password_check, csrf, started_at, expires_at, notice"
    " FROM review_sessions WHERE token_hash = ? AND expires_at > ?"
)
# Takes the row's lock on PostgreSQL (a conflict's DO UPDATE does); changes nothing.
_LOCK_KEY = (
    "INSERT INTO review_throttle (key, failures, updated_at) VALUES (?, '[]', ?)"
    " ON CONFLICT (key) DO UPDATE SET failures = review_throttle.failures"
)


def _session(row: Sequence[Any]) -> StoredSession:
    return StoredSession(
        token_hash=row[0],
        username=row[1],
        password_check=row[2],
        csrf=row[3],
        started_at=from_micros(row[4]),
        expires_at=from_micros(row[5]),
        notice=row[6] or "",
    )


async def _failures(tx: Tx, keys: Sequence[str], since: int, now: int) -> dict[str, list[int]]:
    """The failures of `keys` after `since`, each key's row locked (created if missing)."""
    for key in sorted(set(keys)):
        await tx.execute(_LOCK_KEY, (key, now))
    rows = await tx.fetch(
        f"SELECT key, failures FROM review_throttle WHERE key IN ({_marks(len(keys))})",
        tuple(keys),
    )
    return {key: [at for at in json.loads(failures) if at > since] for key, failures in rows}


class SqlSignIns(SqlJobs, SignIns):
    """The review page's sessions and throttle; the class mixing it in supplies transactions."""

    async def start_session(self, session: StoredSession, now: datetime) -> None:
        values = (
            session.token_hash,
            session.username,
            session.password_check,
            session.csrf,
            to_micros(session.started_at),
            to_micros(session.expires_at),
            session.notice or None,
        )

        async def job(tx: Tx) -> None:
            await tx.execute("DELETE FROM review_sessions WHERE expires_at <= ?", (to_micros(now),))
            await tx.execute(
                "INSERT INTO review_sessions (token_hash, username, password_check, csrf,"
                " started_at, expires_at, notice) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )

        await self._write(job)

    async def get_session(self, token_hash: str, now: datetime) -> StoredSession | None:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(_SESSION, (token_hash, to_micros(now)))

        rows = await self._read(job)
        return _session(rows[0]) if rows else None

    async def end_session(self, token_hash: str) -> None:
        async def job(tx: Tx) -> int:
            return await tx.execute(
                "DELETE FROM review_sessions WHERE token_hash = ?", (token_hash,)
            )

        await self._write_statement(job)

    async def leave_notice(self, token_hash: str, text: str) -> None:
        async def job(tx: Tx) -> int:
            return await tx.execute(
                "UPDATE review_sessions SET notice = ? WHERE token_hash = ?",
                (text or None, token_hash),
            )

        await self._write_statement(job)

    async def take_notice(self, token_hash: str) -> str:
        async def job(tx: Tx) -> str:
            rows = await tx.fetch(
                "SELECT notice FROM review_sessions WHERE token_hash = ?", (token_hash,)
            )
            notice = rows[0][0] if rows else None
            if notice is None:
                return ""
            # Only the process whose UPDATE clears it shows it (PostgreSQL: a second one
            # waits for the first's row lock, then finds the notice gone).
            taken = await tx.execute(
                "UPDATE review_sessions SET notice = NULL WHERE token_hash = ? AND notice = ?",
                (token_hash, notice),
            )
            return str(notice) if taken else ""

        return await self._write(job)

    async def count_sign_in(
        self, keys: Sequence[ThrottleKey], now: datetime, window: timedelta
    ) -> timedelta | None:
        at = to_micros(now)
        since = to_micros(now - window)

        async def job(tx: Tx) -> timedelta | None:
            # Stale rows another attempt holds are left to a later one: no waiting here
            # (PostgreSQL: SKIP LOCKED), so this cleanup never waits in a cycle with a lock.
            await tx.execute(
                "DELETE FROM review_throttle WHERE key IN (SELECT key FROM review_throttle"
                f" WHERE updated_at <= ? {self.claim_lock})",
                (since,),
            )
            recent = await _failures(tx, [k.key for k in keys], since, at)
            waits = [
                from_micros(sorted(recent[k.key])[-k.limit]) + window - now
                for k in keys
                if len(recent[k.key]) >= k.limit
            ]
            if waits:
                return max(waits)
            for k in keys:
                await tx.execute(
                    "UPDATE review_throttle SET failures = ?, updated_at = ? WHERE key = ?",
                    (json.dumps([*recent[k.key], at]), at, k.key),
                )
            return None

        return await self._write(job)

    async def forgive_sign_in(
        self, clear: Sequence[str], forgive: Sequence[str], at: datetime
    ) -> None:
        moment = to_micros(at)

        async def job(tx: Tx) -> None:
            if clear:
                await tx.execute(
                    f"DELETE FROM review_throttle WHERE key IN ({_marks(len(clear))})",
                    tuple(clear),
                )
            if not forgive:
                return
            recent = await _failures(tx, forgive, -1, moment)
            for key in forgive:
                failures = recent.get(key, [])
                if moment in failures:
                    failures.remove(moment)
                await tx.execute(
                    "UPDATE review_throttle SET failures = ? WHERE key = ?",
                    (json.dumps(failures), key),
                )

        await self._write(job)
