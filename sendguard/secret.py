"""Secrets in the configuration: a value may be written literally, as `env:NAME` (an
environment variable) or as `file:/path` (a Docker or Kubernetes secret file).

A reference that cannot be read is a configuration error naming the field and the variable or
path, never an empty or generated value. The one exception is the embedded default's
`env:SENDGUARD_API_TOKEN` in `http.api_tokens`: unset, the server keeps its token file.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from sendguard.errors import SendguardError

DEFAULT_API_TOKEN = "env:SENDGUARD_API_TOKEN"  # noqa: S105 - a reference, not a token
"""The default's token reference: optional, since a fresh install has no variable set."""


class SecretError(SendguardError):
    """A secret reference that cannot be resolved; the message says why."""


def is_reference(value: str) -> bool:
    """True for `env:NAME` and `file:/path` values."""
    return value.startswith(("env:", "file:"))


def resolve_secret(value: str, environ: Mapping[str, str]) -> str:
    """The secret `value` stands for; raise SecretError if it cannot be read or is empty."""
    if value.startswith("env:"):
        name = value[4:]
        found = environ.get(name, "")
        if not found:
            raise SecretError(f"environment variable {name} is not set (or is empty)")
        return found
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            # Secret files usually end with a newline that is not part of the secret.
            found = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretError(f"secret file {path} is not UTF-8 text") from None
        if not found:
            raise SecretError(f"secret file {path} is empty")
        return found
    return value


def redacted(url: str) -> str:
    """`url` fit for a log line: a password in it is replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
