"""Password hashes for SMTP AUTH users (`smtp.auth_users`): scrypt, compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_N, _R, _P = 2**14, 8, 1

DECOY_HASH = (
    "scrypt$16384$8$1$B/xMW6N+2/RjZRHrf6eyEg==$8WCksXRpA6efzkXuh2Tot/+urqDa9Ld9pQZijtecxNA="
)
"""Checked when a user name is unknown, so a wrong name costs as long as a wrong password: the
hash of a random password nobody kept, with the parameters `hash_password` uses (a test keeps
them equal). A constant, not hashed at import: each scrypt is ~70 ms of CPU that every
`sendguard serve` (and every test server) paid twice at startup."""


def hash_password(password: str) -> str:
    """A self-describing hash: `scrypt$N$r$p$salt$hash` (base64)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(
        [
            "scrypt",
            str(_N),
            str(_R),
            str(_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def is_hash(value: str) -> bool:
    """True if `value` has the form `hash_password` produces."""
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == "scrypt" and all(p.isdigit() for p in parts[1:4])


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches the `stored` hash."""
    if not is_hash(stored):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    try:
        expected = base64.b64decode(digest, validate=True)
        candidate = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate, expected)
