"""sendguard's exception tree.

Inside, failures are specific exceptions; the ingresses turn them into replies at the edge.
A policy that raises or overruns its budget is not an error here: the engine records it as
that policy's outcome and applies its `on_error` (see engine.py)::

    SendguardError
    ├── ConfigError            bad configuration; carries every problem with its field path
    ├── InvalidMessage         a message or envelope the ingress must refuse (SMTP 5xx, HTTP 400)
    │   └── InvalidAddress     a recipient or sender address that fails strict validation
    ├── IdempotencyKeyReused   an Idempotency-Key sent again with another request (HTTP 422)
    ├── StoreError
    │   ├── StoreUnavailable   the store cannot commit or read now (SMTP 451 4.3.0, HTTP 503)
    │   ├── StoreLocked        another process owns this store (SQLite is single-instance)
    │   └── Conflict           the stored state forbids the change (HTTP 409)
    └── UpstreamError
        ├── UpstreamTransient  4xx or network trouble: deferred and retried with backoff
        └── UpstreamPermanent  5xx: the delivery fails
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "Conflict",
    "IdempotencyKeyReused",
    "InvalidAddress",
    "InvalidMessage",
    "SendguardError",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "UpstreamError",
    "UpstreamPermanent",
    "UpstreamTransient",
]


class SendguardError(Exception):
    """Base of every error sendguard raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration: where it is and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(SendguardError):
    """The configuration is invalid; `problems` lists every error found, each with its path."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InvalidMessage(SendguardError):
    """The message or its envelope cannot be accepted; `field` names what is wrong."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidAddress(InvalidMessage):
    """An address failed strict validation; it is refused, never rewritten."""


class IdempotencyKeyReused(SendguardError):
    """An Idempotency-Key came again with a different request; nothing is created."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request;"
            " use a new key for a new message"
        )


class StoreError(SendguardError):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot serve the request now; the caller should answer 'try again later'.

    `kind` classes the cause for the metrics: `disk_full`, `io_error`, `read_only` (a commit
    the store's disk or server refused), or `unavailable` (anything else: unreachable,
    locked, closed).
    """

    def __init__(self, message: str, *, kind: str = "unavailable") -> None:
        self.kind = kind
        super().__init__(message)


class StoreLocked(StoreError):
    """Another process already owns this store."""


class Conflict(StoreError):
    """The stored state does not allow the requested change."""


class UpstreamError(SendguardError):
    """The upstream did not take the message."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class UpstreamTransient(UpstreamError):
    """Worth retrying later: a 4xx reply, a timeout, a refused or dropped connection."""

    def __init__(
        self, message: str, *, code: int | None = None, retry_after: timedelta | None = None
    ) -> None:
        self.retry_after = retry_after
        """The upstream asked for at least this long before the next try (HTTP Retry-After)."""
        super().__init__(message, code=code)


class UpstreamPermanent(UpstreamError):
    """Not worth retrying: a 5xx reply."""
