"""The audit log (`AuditLog`): what people and tools changed. Suppressions write their
own entries in their transactions (`sql_facts_events.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sendguard.audit import AuditEntry
from sendguard.clock import from_micros, to_micros
from sendguard.store.sql_jobs import SqlJobs, Tx


class SqlAudit(SqlJobs):
    """Appending to and reading the audit log."""

    async def add_audit(self, entry: AuditEntry) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO audit (at, actor, action, target, note, count)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    to_micros(entry.at),
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.note,
                    entry.count,
                ),
            )

        await self._write(job)

    async def audit(self, limit: int = 100) -> Sequence[AuditEntry]:
        async def job(tx: Tx) -> list[Sequence[Any]]:
            return await tx.fetch(
                "SELECT id, at, actor, action, target, note, count FROM audit"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )

        return [
            AuditEntry(from_micros(r[1]), r[2], r[3], r[4], r[5], r[6], r[0])
            for r in await self._read(job)
        ]
