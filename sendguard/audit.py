"""The audit log: who did what, when and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which deliveries or campaign, when, and why."""

    at: datetime
    actor: str
    action: str
    target: str
    note: str = ""
    count: int = 0
    id: int | None = None
