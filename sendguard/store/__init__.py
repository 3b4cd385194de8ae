"""Stores keep messages, deliveries and everything policies read; `base.py` is the contract.

Backends are found by the scheme of `store.url`: each registers under the entry point group
`sendguard.stores`, one entry per scheme it serves, the built-in ones too::

    [project.entry-points."sendguard.stores"]
    sqlite = "sendguard.store.sqlite:BACKEND"
    postgresql = "sendguard.store.postgres:BACKEND"

An entry names a `StoreBackend`: it builds the store for a URL and, for tests, one on fresh
storage. Installing a distribution that registers a scheme is all it takes to use it (and to
run the contract suite against it); see docs/stores.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sendguard.errors import ConfigError, ConfigProblem
from sendguard.store.base import Store

__all__ = [
    "STORE_GROUP",
    "StoreBackend",
    "StoreSettings",
    "installed_backends",
    "load_backend",
    "open_store",
]

STORE_GROUP = "sendguard.stores"
"""The entry point group store backends register under, keyed by URL scheme."""

_URL = "store.url"


@dataclass(frozen=True)
class StoreSettings:
    """The `store:` options besides the URL; each backend uses those that apply to it."""

    busy_timeout: timedelta = timedelta(seconds=5)
    """How long an operation may wait for the database (a lock, a connection)."""
    schema: str = "public"
    """The schema holding sendguard's tables, where the database has schemas."""
    pool_size: int = 10
    """Connections per instance, where the backend pools them."""


class StoreBackend(Protocol):
    """What an entry point of `sendguard.stores` names."""

    def from_url(self, url: str, settings: StoreSettings) -> Store:
        """The store for `url`, not yet opened.

        Do no I/O here (`Store.open` connects): the config check calls it to validate
        `store.url`. Raise ValueError saying what is wrong with the URL and how it should look.
        """
        ...

    def scratch(
        self, directory: Path, environ: Mapping[str, str]
    ) -> AbstractAsyncContextManager[Store]:
        """A store (not yet opened) on fresh, empty storage, removed on exit: what the
        contract suite and plugin tests run against.

        `directory` is an empty temporary directory it may use; `environ` says where external
        servers are (a backend documents the variables it reads).
        """
        ...


def installed_backends() -> dict[str, EntryPoint]:
    """Every registered store backend, by the URL scheme it serves."""
    return {ep.name: ep for ep in entry_points(group=STORE_GROUP)}


def _problem(message: str) -> ConfigError:
    return ConfigError([ConfigProblem(_URL, message)])


def load_backend(scheme: str) -> StoreBackend:
    """The backend registered for `scheme`; a ConfigError naming `store.url` says which
    schemes are installed if none is."""
    found = installed_backends()
    if scheme not in found:
        known = ", ".join(sorted(found)) or "none"
        what = f"the scheme {scheme!r}" if scheme else "a URL without a scheme"
        raise _problem(
            f"no store backend for {what} is installed; installed schemes: {known} "
            "(e.g. sqlite:///var/sendguard.db or postgresql://user@host:5432/db)"
        )
    try:
        backend = found[scheme].load()
    except Exception as exc:  # a broken plugin must be reported, whatever it raises
        raise _problem(f"the store backend for {scheme!r} failed to import: {exc}") from exc
    if not callable(getattr(backend, "from_url", None)):
        raise _problem(f"the store backend for {scheme!r} has no from_url(url, settings)")
    loaded: StoreBackend = backend
    return loaded


def open_store(url: str, settings: StoreSettings | None = None) -> Store:
    """The store for `url` from the backend registered for its scheme (not yet opened).

    A ConfigError naming `store.url` says what is wrong: an unknown scheme (with the installed
    ones) or a URL the backend refuses.
    """
    backend = load_backend(urlsplit(url).scheme)
    try:
        return backend.from_url(url, settings or StoreSettings())
    except ValueError as exc:
        raise _problem(str(exc)) from None
