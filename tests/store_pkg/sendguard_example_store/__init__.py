"""An example third-party store backend: SQLite, addressed by the directory that holds it.

`sqlite-dir:///var/state` (relative to the working directory) or `sqlite-dir:////srv/state`
keeps the database as `sendguard.db` inside that directory. It reuses sendguard's SQLite
store; what it brings is its own scheme, URL handling and scratch storage, which is all a
backend needs to plug in through the `sendguard.stores` entry point group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from sendguard.store import StoreSettings
from sendguard.store.sqlite import SQLiteStore

SCHEME = "sqlite-dir"
FILE_NAME = "sendguard.db"


class DirectoryStore(SQLiteStore):
    """The SQLite store in `directory / sendguard.db`."""

    def __init__(self, directory: Path, settings: StoreSettings) -> None:
        super().__init__(directory / FILE_NAME, busy_timeout=settings.busy_timeout)
        self.directory = directory


def directory_of(url: str) -> Path:
    """The directory a `sqlite-dir:` URL names."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(
            f"{url!r} must look like {SCHEME}:///relative/dir or {SCHEME}:////absolute/dir"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a {SCHEME} URL takes no query or fragment")
    path = parts.path[1:]
    if not path.strip("/"):
        raise ValueError(f"{url!r} names no directory; e.g. {SCHEME}:///var/state")
    return Path(path)


class DirectoryBackend:
    """The `sqlite-dir` scheme."""

    def from_url(self, url: str, settings: StoreSettings) -> DirectoryStore:
        return DirectoryStore(directory_of(url), settings)

    @asynccontextmanager
    async def scratch(
        self, directory: Path, environ: Mapping[str, str]
    ) -> AsyncIterator[DirectoryStore]:
        del environ
        yield self.from_url(f"{SCHEME}:///{directory / 'state'}", StoreSettings())


BACKEND = DirectoryBackend()
