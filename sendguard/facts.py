"""Facts: context from outside (a CRM, a calendar) that premises of messages name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Fact:
    """Context from outside (CRM, calendar): `key` holds `value`, optionally for one contact."""

    key: str
    value: str
    observed_at: datetime
    contact: str | None = None
    superseded_by: str | None = None
    """The fact that replaces this one (a rescheduled meeting's new meeting): a full key, or
    the key's leading part (`meeting:8830` for `meeting:8812:status`), see `successor`."""

    @property
    def successor(self) -> str | None:
        """The key that premises on this fact follow, if it was superseded.

        `superseded_by` with fewer `:`-separated parts than `key` names the successor entity;
        the key's remaining trailing parts are kept: `meeting:8812:status` superseded by
        `meeting:8830` is followed to `meeting:8830:status`.
        """
        if not self.superseded_by:
            return None
        parts, given = self.key.split(":"), self.superseded_by.split(":")
        if len(given) >= len(parts):
            return self.superseded_by
        return ":".join(given + parts[len(given) :])
