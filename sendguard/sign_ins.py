"""The review page's sign-ins as the store keeps them: sessions and failed-sign-in counts.

Every worker and instance sharing a store shares them, so a reviewer stays signed in whichever
process answers, and the bound on guessing passwords holds for the whole service. The store
never sees a session's token, only its SHA-256 (`token_hash`): a copy of the database hands
out no sign-in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime


def token_hash(token: str) -> str:
    """What the store keys a session by: the SHA-256 of its cookie's token, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_check(password_hash: str) -> str:
    """A fingerprint of the password hash a session was opened with: when the configured
    hash changes (a new password), the sessions opened with the old one no longer match."""
    return hashlib.sha256(b"sendguard review session\0" + password_hash.encode()).hexdigest()


@dataclass(frozen=True)
class StoredSession:
    """A review page session as kept in the store."""

    token_hash: str
    username: str
    password_check: str
    csrf: str
    started_at: datetime
    expires_at: datetime
    notice: str = ""
    """What the last form did, shown once by the next page (empty: nothing to show)."""


@dataclass(frozen=True)
class ThrottleKey:
    """What a sign-in attempt counts against (a user name, an address), and how many failed
    attempts it may have within the window."""

    key: str
    limit: int
