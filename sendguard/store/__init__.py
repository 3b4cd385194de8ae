"""Stores keep messages, deliveries and everything policies read; `base.py` is the contract."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sendguard.errors import ConfigError, ConfigProblem
from sendguard.store.base import Store


def sqlite_path(url: str) -> Path:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` URL."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(
            [
                ConfigProblem(
                    "store.url",
                    f"{url!r} must look like sqlite:///var/sendguard.db or sqlite:////abs/path.db",
                )
            ]
        )
    # sqlite:///var/x.db -> "var/x.db" (relative to the working directory);
    # sqlite:////abs/x.db -> "/abs/x.db".
    return Path(rest[1:])


def open_store(
    url: str, *, busy_timeout: timedelta, schema: str = "public", pool_size: int = 10
) -> Store:
    """The store backend for `url` (not yet opened)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from sendguard.store.sqlite import SQLiteStore  # noqa: PLC0415 - only the chosen backend loads

        return SQLiteStore(sqlite_path(url), busy_timeout=busy_timeout)
    if scheme in ("postgresql", "postgres"):
        from sendguard.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(
            url, schema=schema, pool_size=pool_size, timeout=busy_timeout.total_seconds()
        )
    raise ConfigError(
        [
            ConfigProblem(
                "store.url",
                f"unknown scheme {scheme!r}; use sqlite:///path or postgresql://user@host/db",
            )
        ]
    )
