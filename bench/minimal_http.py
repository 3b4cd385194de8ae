"""The HTTP baseline: a minimal aiohttp handler that makes one durable insert per request.

    python bench/minimal_http.py PORT DB_PATH [--group-commit]

`POST /v1/messages` reads the JSON body, inserts it as one row into SQLite (WAL,
`synchronous=FULL`: the commit is fsynced, as sendguard's is) and answers 202 with the row's id
only after the commit. No validation, no MIME, no policies, no logging: what Python, aiohttp and
a durable SQLite write cost on this machine, for `make bench` to compare `sendguard serve`'s
HTTP send path with.

The writes run on one writer thread with one connection (the event loop never waits for the
disk); the event loop is uvloop where installed, as `sendguard serve`'s. Without
`--group-commit` every request is its own transaction (INSERT, COMMIT: one fsync per request);
with it, the writer takes every request queued meanwhile into one transaction (one fsync per
batch), as sendguard's SQLite writer does.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue

from aiohttp import web

Job = tuple[str, Future[int]]


class Writer:
    """One connection on one thread; `insert` returns once the row is committed."""

    def __init__(self, path: Path, group_commit: bool) -> None:
        self.path = path
        self.group_commit = group_commit
        self.jobs: SimpleQueue[Job | None] = SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, body TEXT)")
        while (job := self.jobs.get()) is not None:
            batch = [job]
            while self.group_commit and not self.jobs.empty():
                more = self.jobs.get()
                if more is None:
                    self.jobs.put(None)
                    break
                batch.append(more)
            try:
                db.execute("BEGIN")
                ids = [
                    db.execute("INSERT INTO messages (body) VALUES (?)", (body,)).lastrowid or 0
                    for body, _ in batch
                ]
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for row, (_, future) in zip(ids, batch, strict=True):
                future.set_result(row)
        db.close()

    async def insert(self, body: str) -> int:
        future: Future[int] = Future()
        self.jobs.put((body, future))
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join()


def app(writer: Writer) -> web.Application:
    async def send(request: web.Request) -> web.Response:
        payload = await request.json()
        row = await writer.insert(json.dumps(payload))
        return web.json_response({"id": row}, status=202)

    application = web.Application()
    application.router.add_post("/v1/messages", send)
    return application


def main(argv: list[str]) -> int:
    port, path = int(argv[0]), Path(argv[1])
    writer = Writer(path, group_commit="--group-commit" in argv[2:])
    ready: Callable[[str], None] = print
    try:
        # The event loop `sendguard serve` runs by default: uvloop where installed.
        import uvloop  # noqa: PLC0415

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        web.run_app(
            app(writer),
            host="127.0.0.1",
            port=port,
            print=ready,
            access_log=None,
            shutdown_timeout=5,
            loop=loop,
        )
    finally:
        writer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
