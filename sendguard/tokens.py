"""API tokens: kept only as hashes with their names, compared in constant time.

With no token configured, one is generated into `http.token_file` (mode 0600) on first start
and reused after; the CLI reads it from there. It acts under the name `token-file`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

TOKEN_FILE_NAME = "token-file"  # noqa: S105 - the name it acts under, not a secret


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenSet:
    """The tokens that may use the API, each with the name it acts under."""

    def __init__(self, tokens: Iterable[tuple[str, str]]) -> None:
        self._digests = tuple((name, _digest(t)) for name, t in tokens if t)
        if not self._digests:
            raise ValueError("at least one API token is needed")

    def identify(self, token: str) -> str | None:
        """The name of `token` if it is one of ours (every digest is compared, in constant
        time, so the answer's timing tells nothing about which one matched)."""
        candidate = _digest(token)
        found: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = name
        return found

    def accepts(self, token: str) -> bool:
        """True if `token` is one of ours."""
        return self.identify(token) is not None


def read_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in `path`, creating it (0600) if missing; also whether it was created."""
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Written aside, then linked into place (which fails if the file exists): the workers of
    # one `serve --workers N` start together, and all must end up with the one token.
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    try:
        path.hardlink_to(aside)
    except FileExistsError:
        theirs = path.read_text(encoding="utf-8").strip()
        if theirs:  # another worker was first
            aside.unlink()
            return theirs, False
        aside.replace(path)  # an existing empty file (its permissions go with it)
        return token, True
    aside.unlink()
    return token, True
