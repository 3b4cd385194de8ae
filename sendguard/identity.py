"""Who is acting: the authenticated identity every audit entry records.

An API token acts under its configured name (a plain token under `token-N`); a person signed in
to the review page acts under their user name with their role. Whatever a request body says
about a reviewer is only ever part of the note.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What an identity may do."""

    API = "api"
    """An API token: everything the API offers."""
    REVIEWER = "reviewer"
    """A review account that may approve, reject, pause, resume and edit."""
    VIEWER = "viewer"
    """A review account that may only look."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    name: str
    role: Role

    @property
    def may_decide(self) -> bool:
        """True if this identity may change what happens to deliveries."""
        return self.role is not Role.VIEWER


def note_with_claimed_reviewer(note: str, claimed: str | None, identity: Identity) -> str:
    """The note to record: a reviewer named in the request body (not the authenticated one)
    is kept as part of it, so a script acting for someone still says for whom."""
    if not claimed or claimed == identity.name:
        return note
    return f"reviewer {claimed}: {note}" if note else f"reviewer {claimed}"
