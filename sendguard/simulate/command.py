"""`sendguard simulate`: the what-if replay from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sendguard.config import StoreOptions, load_config
from sendguard.duration import parse_duration
from sendguard.errors import ConfigError, StoreUnavailable
from sendguard.logs import configure
from sendguard.simulate.source import (
    Recorded,
    SourceError,
    read_jsonl,
    read_mbox,
    read_store,
)
from sendguard.store import open_store
from sendguard.store.sqlite import sqlite_path

DEFAULT_WINDOW = timedelta(days=30)


def _time(text: str, option: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise SourceError(f"{option} {text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise SourceError(f"{option} {text!r} needs a UTC offset")
    return at


def _window(args: argparse.Namespace, store: bool) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    if args.start:
        return _time(args.start, "--from"), _time(args.end, "--to") if args.end else now
    if args.end:
        raise SourceError("--to needs --from")
    if args.since:
        try:
            return now - parse_duration(args.since), now
        except ValueError as exc:
            raise SourceError(f"--since: {exc}") from None
    return (now - DEFAULT_WINDOW, now) if store else (None, None)


async def read_source(
    options: StoreOptions, source: str | None, since: datetime | None, until: datetime | None
) -> list[Recorded]:
    """The recorded items of `source` (a .jsonl, an .mbox, a store URL; None: `options.url`),
    those of a store within [since, until)."""
    if source is not None and source.endswith(".jsonl"):
        return read_jsonl(Path(source))
    if source is not None and source.endswith(".mbox"):
        return read_mbox(Path(source))
    url = source or options.url
    assert since is not None and until is not None  # a store always has a window
    if urlsplit(url).scheme != "sqlite":
        store = open_store(url, options.settings())
        await store.open()
        try:
            return await read_store(store, since, until)
        finally:
            await store.close()
    # A running server holds its SQLite file for itself: read a consistent copy instead,
    # which also keeps the recorded history untouched (no migration, no recovery).
    try:
        original = sqlite_path(url)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    if not original.is_file():
        raise SourceError(f"no store at {original}")
    with tempfile.TemporaryDirectory(prefix="sendguard-simulate-") as scratch:
        copy = Path(scratch) / "recorded.db"
        source_db = sqlite3.connect(f"file:{original.absolute()}?mode=ro", uri=True)
        target_db = sqlite3.connect(copy)
        try:
            source_db.backup(target_db)
        finally:
            target_db.close()
            source_db.close()
        store = open_store(f"sqlite:///{copy}", options.settings())
        await store.open()
        try:
            return await read_store(store, since, until)
        finally:
            await store.close()


def run(args: argparse.Namespace) -> int:
    """Run `sendguard simulate`; 0 with a report, 2 when the config or the source is wrong."""
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        print(f"sendguard: {args.config} is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    # Every replayed decision would log a line: only problems go out, on stderr, so stdout
    # is the report alone (`--json | jq`).
    configure(level="warning")
    # The engine, policies and renderers load only when a replay runs, not for `--help`.
    from sendguard.simulate import simulate  # noqa: PLC0415
    from sendguard.simulate.render import html, text  # noqa: PLC0415

    is_file = args.store is not None and args.store.endswith((".jsonl", ".mbox"))
    try:
        since, until = _window(args, store=not is_file)

        async def main() -> str:
            items = await read_source(settings.config.store, args.store, since, until)
            report = await simulate(settings, items, since, until)
            if args.json:
                return json.dumps(report.to_json(), indent=2)
            if args.html:
                args.html.write_text(html(report), encoding="utf-8")
                return f"wrote {args.html}: {len(report.changed)} deliveries decided differently"
            return text(report)

        print(asyncio.run(main()))
    except (SourceError, ConfigError, StoreUnavailable, sqlite3.Error) as exc:
        print(f"sendguard: {exc}", file=sys.stderr)
        return 2
    return 0
