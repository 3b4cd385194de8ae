"""The WAL checkpoint beside the writer: its own connection on its own thread.

SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 frames: that
commit copies ~4 MB into the database file and fsyncs it before it returns, and the message it
carries waits for all of it (at idle one message in ~37). Here the writer's connection runs
with the automatic checkpoint at `HARD_CAP` frames instead, and this thread checkpoints every
`EVERY` commits of the writer, preferably while the writer has no batch on its thread. The
writer's commits stay as they were (`synchronous=FULL`, their 250 after the commit); the copy
and the database file's fsync move to this thread, which holds no lock the writer needs
(PASSIVE: it never waits for a writer or a reader, and none waits for it).

The WAL restarts (is written from its start again) only when a transaction that began on a WAL
all copied writes, and a batch that overlapped a PASSIVE copy began before it was done: beside
a writer at idle the WAL never restarted, and grew (new blocks of the file in every commit,
the file system's metadata in every fsync). So once the WAL is past `RESTART_AT` frames, a
round ends holding the writers' turn: it copies what the writer added meanwhile (often
nothing), and the next transaction restarts the WAL. Should this thread fall behind anyway (a
reader holding an old snapshot, a turn it cannot get), the writer's own automatic checkpoint
at `HARD_CAP` frames still bounds the WAL.

The workers of `serve --workers N` each run one; two checkpoints at once are refused by SQLite
(the second reports busy and copies nothing), which is harmless: the next round copies.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import structlog

from sendguard.errors import StoreUnavailable

log = structlog.get_logger("sendguard.store.sqlite")

# Commits of the writer between two checkpoints: at idle a message's commit writes ~27 frames,
# so ~800 frames a round (most of them new versions of the same pages: a round copies each
# page once, so fewer rounds copy less); under load a commit carries a batch and more frames.
EVERY = 30

# Past this many frames in the WAL (~8 MB), a round ends holding the writers' turn, so that the
# WAL restarts (see above).
RESTART_AT = 2_000

# The writer's own automatic checkpoint, should this thread fall behind: 10,000 frames (~40 MB
# of WAL at 4 KB pages). The WAL file stays as large as it once grew (SQLite reuses it).
HARD_CAP = 10_000

# How long a round waits for the writer to be between batches before it copies anyway.
IDLE_WAIT = 0.05


class Checkpointer:
    """A thread that copies the WAL of the database at `path` into it, beside the writer.

    The writer calls `writing` before each batch and `committed` after it (from its thread);
    `stop` ends the thread. `rounds` (checkpoints run) is for tests and the benchmark.
    """

    def __init__(
        self,
        path: Path,
        busy_timeout: timedelta,
        writers_turn: Callable[[], AbstractContextManager[None]],
        every: int | None = None,
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._writers_turn = writers_turn
        self._every = EVERY if every is None else every
        self._commits = 0
        self._due = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        """Open the connection (here, so a failure is the caller's) and start the thread."""
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout.total_seconds(),
        )
        # Before copying, the WAL is synced; after, the database file: a commit the WAL held
        # is durable in the file before the WAL may be overwritten. (No trace callback: its
        # statements are not any message's.)
        conn.execute("PRAGMA synchronous=FULL")
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="sendguard-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def writing(self) -> None:
        """The writer starts a batch (called on the writer's thread)."""
        self._idle.clear()

    def committed(self) -> None:
        """The writer's batch ended, committed or not (called on the writer's thread)."""
        self._idle.set()
        self._commits += 1
        if self._commits >= self._every:
            self._commits = 0
            self._due.set()

    def stop(self) -> None:
        """End the thread after its round in progress (the WAL stays as it is: SQLite
        checkpoints it when the last connection closes)."""
        self._stopping = True
        self._due.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                self._due.wait()
                if self._stopping:
                    return
                self._due.clear()
                # Between two batches if the writer has a gap within IDLE_WAIT; else anyway:
                # PASSIVE copies beside a committing writer without holding it up.
                self._idle.wait(IDLE_WAIT)
                self._round(conn)
        finally:
            conn.close()

    def _round(self, conn: sqlite3.Connection) -> None:
        started = time.perf_counter()
        try:
            busy, wal, copied = self._checkpoint(conn)
            held = not busy and wal >= RESTART_AT
            if held:
                with self._writers_turn():  # the rest, so that the next commit restarts the WAL
                    busy, wal, copied = self._checkpoint(conn)
        except (sqlite3.Error, StoreUnavailable) as exc:
            # The writer's automatic checkpoint at HARD_CAP still bounds the WAL.
            log.warning("checkpoint failed", path=str(self._path), error=str(exc))
            return
        self.rounds += 1
        log.debug(
            "checkpoint",
            busy=busy,
            wal_frames=wal,
            copied_frames=copied,
            held=held,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
        """(busy, frames in the WAL, frames of it in the database file): busy if another
        checkpoint ran (another worker's), and then nothing was copied."""
        busy, wal, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(wal), int(copied)
