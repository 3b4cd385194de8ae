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
_lock = threading.Lock()
_last = 0


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
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    with _lock:
        if value <= _last:
            value = _last + 1 + int.from_bytes(os.urandom(_STEP_BITS // 8), "big")
        _last = value
    return "".join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])
