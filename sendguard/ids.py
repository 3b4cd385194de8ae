"""Identifiers for messages and deliveries: sortable by creation time, unguessable, URL- and
SMTP-safe."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_STEP_BITS = 64
# Two digits at a time (10 bits), most significant first: 13 look-ups instead of 26 divisions
# (ids are made twice per accepted message; the division loop was most of their cost).
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
_SHIFTS = tuple(range(120, -1, -10))
# Random numbers are read from the kernel 4,000 bytes at a time, not per id: one `getrandom`
# system call for ~150 messages instead of two or three each. Each number is used once; a
# forked child drops the parent's unused ones (below), or both would hand out the same ids.
_RANDOM_BYTES = 10  # 80 bits an id; a step takes 64 of them
_READ_AHEAD = 400
_lock = threading.Lock()
_last = 0
_unused: list[int] = []


def _read_ahead() -> None:
    pool = os.urandom(_RANDOM_BYTES * _READ_AHEAD)
    _unused[:] = [
        int.from_bytes(pool[at : at + _RANDOM_BYTES], "big")
        for at in range(0, len(pool), _RANDOM_BYTES)
    ]


def _forget_in_child() -> None:
    global _lock  # noqa: PLW0603 - another thread may have held it at the fork
    _lock = threading.Lock()
    _unused.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def new_id() -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds since the epoch, 80 random bits.

    Ids made by one process are strictly increasing, so "newest first" listings and `id <
    cursor` pages are exact. A second id within the same millisecond (or after the clock
    stepped back) is the previous one plus a random step of 1 to 2**64, not plus one: it
    still sorts after it, and knowing one id leaves at least 64 unknown bits of the next
    (ids appear in the URLs of the review API). Ids of different processes are ordered by
    millisecond only. An id does reveal when it was made.
    """
    global _last  # noqa: PLW0603 - one counter per process is the point
    millisecond = time.time_ns() // 1_000_000
    with _lock:
        if not _unused:
            _read_ahead()
        value = millisecond << 80 | _unused.pop()
        if value <= _last:
            if not _unused:
                _read_ahead()
            value = _last + 1 + (_unused.pop() >> 80 - _STEP_BITS)
        _last = value
    return "".join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])
