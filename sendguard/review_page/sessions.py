"""Sessions of the review page, and the throttle on failed sign-ins.

A session lives in this process only (sendguard serves from one process): a restart signs
everyone out, which is the safe direction. The session id travels only in an `HttpOnly`,
`SameSite=Strict` cookie; the CSRF token that every form carries is a separate random value
bound to the session.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from sendguard.identity import Identity

MAX_FAILURES = 5
# One address may be a whole office behind NAT: it gets more tries than one user name.
MAX_FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Session:
    """A signed-in person."""

    id: str
    identity: Identity
    csrf: str
    expires_at: datetime

    def csrf_matches(self, token: str) -> bool:
        """True if a form's token is this session's (compared in constant time)."""
        return hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    """Open sessions by id; expired ones are forgotten when met or when a new one starts."""

    def __init__(self, lifetime: timedelta) -> None:
        self._lifetime = lifetime
        self._open: dict[str, Session] = {}
        # What a form did, shown once by the page its 303 leads to (Post/Redirect/Get: a
        # reload of that page asks the store again and does nothing again)
        self._notices: dict[str, str] = {}

    def start(self, identity: Identity, now: datetime) -> Session:
        """A new session for `identity`."""
        self._open = {k: s for k, s in self._open.items() if s.expires_at > now}
        self._notices = {k: n for k, n in self._notices.items() if k in self._open}
        session = Session(
            secrets.token_urlsafe(32), identity, secrets.token_urlsafe(32), now + self._lifetime
        )
        self._open[session.id] = session
        return session

    def get(self, session_id: str, now: datetime) -> Session | None:
        """The open session with this id, if it has not expired."""
        session = self._open.get(session_id)
        if session is None:
            return None
        if session.expires_at <= now:
            del self._open[session_id]
            self._notices.pop(session_id, None)
            return None
        return session

    def end(self, session_id: str) -> None:
        """Sign out."""
        self._open.pop(session_id, None)
        self._notices.pop(session_id, None)

    def leave_notice(self, session_id: str, text: str) -> None:
        """Keep what a form did for the next page this session sees (a later one replaces it)."""
        if session_id in self._open:
            self._notices[session_id] = text

    def take_notice(self, session_id: str) -> str:
        """The notice left for this session, once (empty if there is none)."""
        return self._notices.pop(session_id, "")


def throttle_keys(username: str, address: str) -> tuple[tuple[str, int], ...]:
    """What a sign-in attempt counts against, each with its limit."""
    return (
        (f"user:{username.lower()}", MAX_FAILURES),
        (f"addr:{address}", MAX_FAILURES_PER_ADDRESS),
    )


class LoginThrottle:
    """After MAX_FAILURES failed sign-ins for a user name (or MAX_FAILURES_PER_ADDRESS from an
    address) within FAILURE_WINDOW, further attempts are refused until the oldest failure
    leaves the window, so passwords cannot be guessed at speed (a correct one is refused
    meanwhile too)."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[datetime]] = {}

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - FAILURE_WINDOW:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return deque()
        return failures

    def retry_after(self, keys: tuple[tuple[str, int], ...], now: datetime) -> timedelta | None:
        """How long until another attempt is allowed, or None if it is allowed now."""
        waits = []
        for key, limit in keys:
            failures = self._recent(key, now)
            if len(failures) >= limit:
                # the oldest failures leave the window first; wait until one under the limit
                waits.append(failures[len(failures) - limit] + FAILURE_WINDOW - now)
        return max(waits) if waits else None

    def failed(self, keys: tuple[tuple[str, int], ...], now: datetime) -> None:
        """Count a failed attempt against each key."""
        for key, _ in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, keys: tuple[tuple[str, int], ...]) -> None:
        """A correct sign-in clears the count of its user name (not of its address)."""
        for key, _ in keys[:1]:
            self._failures.pop(key, None)
