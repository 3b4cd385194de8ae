"""Identifiers for messages and deliveries: sortable by time, unguessable, URL- and SMTP-safe."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 random bits.

    Ids made by one process are strictly increasing, even within one millisecond (the random
    part is incremented instead), so "newest first" listings are exact.
    """
    global _last  # noqa: PLW0603 - one counter per process is the point
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    with _lock:
        if value <= _last:
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, rest = divmod(value, 32)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars))
