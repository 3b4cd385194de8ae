"""Sessions of the review page, and the throttle on failed sign-ins, kept in the store.

Every worker and every instance sharing the store shares them: a reviewer stays signed in
whichever process answers (and across restarts, until the session expires), sign-out ends the
session everywhere, and the bound on failed sign-ins holds for the whole service. The session
token travels only in an `HttpOnly`, `SameSite=Strict` cookie; the store keeps its SHA-256
only. The CSRF token that every form carries is a separate random value bound to the session.
A session opened with a password that has since changed, or of a user no longer configured,
is refused and forgotten; the role is the one configured now.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sendguard.config import ReviewUserOptions
from sendguard.identity import Identity, Role
from sendguard.sign_ins import StoredSession, ThrottleKey, password_check, token_hash
from sendguard.store.base import SignIns

MAX_FAILURES = 5
# One address may be a whole office behind NAT: it gets more tries than one user name.
MAX_FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Session:
    """A signed-in person."""

    id: str
    """The cookie's token (the store knows only its hash)."""
    identity: Identity
    csrf: str
    expires_at: datetime
    notice: str = ""
    """What the form before this page did, to show once (taken from the store)."""

    @property
    def key(self) -> str:
        """What the store keeps this session by."""
        return token_hash(self.id)

    def csrf_matches(self, token: str) -> bool:
        """True if a form's token is this session's (compared in constant time)."""
        return hmac.compare_digest(self.csrf.encode(), token.encode())


async def start_session(
    store: SignIns,
    identity: Identity,
    password_hash: str,
    lifetime: timedelta,
    now: datetime,
) -> Session:
    """A new session for `identity`, who signed in with the password of `password_hash`."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    stored = StoredSession(
        token_hash(token), identity.name, password_check(password_hash), csrf, now, now + lifetime
    )
    await store.start_session(stored, now)
    return Session(token, identity, csrf, stored.expires_at)


async def find_session(
    store: SignIns,
    token: str,
    users: Mapping[str, ReviewUserOptions],
    now: datetime,
    *,
    take_notice: bool = False,
) -> Session | None:
    """The open session of this token, if it has not expired and its user and password are
    still the configured ones; with `take_notice`, the notice left for it (taken: shown once).
    """
    stored = await store.get_session(token_hash(token), now)
    if stored is None:
        return None
    user = users.get(stored.username)
    if user is None or not hmac.compare_digest(
        stored.password_check, password_check(user.password_hash)
    ):
        await store.end_session(stored.token_hash)
        return None
    notice = ""
    if take_notice and stored.notice:
        notice = await store.take_notice(stored.token_hash)
    identity = Identity(stored.username, Role(user.role))
    return Session(token, identity, stored.csrf, stored.expires_at, notice)


def throttle_keys(username: str, address: str) -> tuple[ThrottleKey, ThrottleKey]:
    """What a sign-in attempt counts against, each with its limit: the user name first."""
    return (
        ThrottleKey(f"user:{username.lower()}", MAX_FAILURES),
        ThrottleKey(f"addr:{address}", MAX_FAILURES_PER_ADDRESS),
    )


async def attempt_sign_in(
    store: SignIns, keys: tuple[ThrottleKey, ThrottleKey], now: datetime
) -> timedelta | None:
    """Count this attempt as failed (until `signed_in` says otherwise), or refuse it: after
    MAX_FAILURES failed sign-ins for a user name (or MAX_FAILURES_PER_ADDRESS from an address)
    within FAILURE_WINDOW, further attempts are refused until the oldest failure leaves the
    window, so passwords cannot be guessed at speed (a correct one is refused meanwhile too).
    Returns how long until another attempt is allowed when refused. Counting before the
    password is checked keeps attempts made at once, on any instances, within the bound."""
    return await store.count_sign_in(keys, now, FAILURE_WINDOW)


async def signed_in(store: SignIns, keys: tuple[ThrottleKey, ThrottleKey], now: datetime) -> None:
    """The attempt counted at `now` was right: it clears the count of its user name, and is
    no failure of its address (whose other failures stay)."""
    user, address = keys
    await store.forgive_sign_in([user.key], [address.key], now)
