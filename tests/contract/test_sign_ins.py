"""The review page's sign-ins in the store (`SignIns`), on every store backend: sessions kept
by their token's hash, expiring, ended everywhere; one-time notices taken once; failed sign-ins
counted one at a time per key, so attempts made at once cannot pass the limit together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sendguard.sign_ins import StoredSession, ThrottleKey, password_check, token_hash
from sendguard.store.base import Store

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)
USER = ThrottleKey("user:ana", 5)
ADDRESS = ThrottleKey("addr:192.0.2.7", 20)


def session(token: str, at: datetime = T0, hours: int = 1) -> StoredSession:
    return StoredSession(
        token_hash(token),
        "ana",
        password_check("$scrypt$hash-of-ana"),
        f"csrf-{token}",
        at,
        at + timedelta(hours=hours),
    )


async def test_a_session_is_found_by_its_hash_until_it_expires_or_ends(store: Store) -> None:
    kept = session("tok-1")
    await store.start_session(kept, T0)
    assert await store.get_session(token_hash("tok-1"), T0 + timedelta(minutes=59)) == kept
    assert await store.get_session("tok-1", T0) is None  # the token itself is no key
    assert await store.get_session(token_hash("tok-2"), T0) is None
    assert await store.get_session(kept.token_hash, T0 + timedelta(hours=1)) is None  # expired
    await store.end_session(kept.token_hash)
    assert await store.get_session(kept.token_hash, T0) is None


async def test_a_new_session_forgets_the_expired_ones(store: Store) -> None:
    old = session("old", T0, hours=1)
    await store.start_session(old, T0)
    later = T0 + timedelta(hours=2)
    await store.start_session(session("new", later), later)
    # Even asked as of a time it was open, the expired session is gone.
    assert await store.get_session(old.token_hash, T0) is None
    assert await store.get_session(token_hash("new"), later) is not None


async def test_a_notice_is_taken_once_even_by_takers_at_once(store: Store) -> None:
    kept = session("tok")
    await store.start_session(kept, T0)
    assert await store.take_notice(kept.token_hash) == ""
    await store.leave_notice(kept.token_hash, "first")
    await store.leave_notice(kept.token_hash, "Campaign spring approved: 3 deliveries.")
    found = await store.get_session(kept.token_hash, T0)
    assert found is not None and found.notice == "Campaign spring approved: 3 deliveries."
    takes = await asyncio.gather(*(store.take_notice(kept.token_hash) for _ in range(6)))
    assert sorted(takes) == ["", "", "", "", "", "Campaign spring approved: 3 deliveries."]
    found = await store.get_session(kept.token_hash, T0)
    assert found is not None and found.notice == ""
    await store.leave_notice(token_hash("nobody"), "lost")  # no session: nothing kept
    assert await store.get_session(token_hash("nobody"), T0) is None


async def test_failures_count_until_the_limit_then_the_wait_is_until_the_oldest_leaves(
    store: Store,
) -> None:
    keys = [USER, ADDRESS]
    for n in range(5):
        assert await store.count_sign_in(keys, T0 + timedelta(minutes=n), WINDOW) is None
    at = T0 + timedelta(minutes=6)
    # The oldest of the 5 (at T0) leaves the window at T0 + 15 min: 9 minutes from `at`.
    assert await store.count_sign_in(keys, at, WINDOW) == timedelta(minutes=9)
    # A refused attempt counts nothing: at T0 + 15 min one more is allowed (and counted).
    assert await store.count_sign_in(keys, T0 + WINDOW, WINDOW) is None
    assert await store.count_sign_in(keys, T0 + WINDOW, WINDOW) == timedelta(minutes=1)
    # Another user name from the same address still has its own count.
    other = [ThrottleKey("user:vic", 5), ADDRESS]
    assert await store.count_sign_in(other, T0 + WINDOW, WINDOW) is None


async def test_a_right_password_clears_its_user_and_forgives_its_address_once(
    store: Store,
) -> None:
    keys = [USER, ThrottleKey(ADDRESS.key, 6)]
    for n in range(4):
        assert await store.count_sign_in(keys, T0 + timedelta(seconds=n), WINDOW) is None
    right = T0 + timedelta(seconds=10)
    assert await store.count_sign_in(keys, right, WINDOW) is None
    await store.forgive_sign_in([USER.key], [ADDRESS.key], right)
    # The user's count starts again; the address keeps its 4 failures, not the right one.
    for n in range(2):
        assert await store.count_sign_in(keys, right + timedelta(seconds=n + 1), WINDOW) is None
    wait = await store.count_sign_in(keys, right + timedelta(seconds=5), WINDOW)
    assert wait is not None and wait == T0 + WINDOW - (right + timedelta(seconds=5))


async def test_attempts_at_once_cannot_pass_the_limit_together(store: Store) -> None:
    keys = [USER, ADDRESS]
    answers = await asyncio.gather(
        *(store.count_sign_in(keys, T0 + timedelta(microseconds=n), WINDOW) for n in range(12))
    )
    assert sum(a is None for a in answers) == 5


async def test_failures_older_than_the_window_are_forgotten(store: Store) -> None:
    keys = [USER, ADDRESS]
    for n in range(5):
        assert await store.count_sign_in(keys, T0 + timedelta(seconds=n), WINDOW) is None
    later = T0 + WINDOW + timedelta(minutes=1)
    other = [ThrottleKey("user:vic", 5), ThrottleKey("addr:198.51.100.1", 20)]
    assert await store.count_sign_in(other, later, WINDOW) is None
    for n in range(5):
        assert await store.count_sign_in(keys, later + timedelta(seconds=n), WINDOW) is None
