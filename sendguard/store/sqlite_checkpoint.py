"""Checkpoints of the SQLite write-ahead log, run off the writer's commits.

By default SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 frames
(`wal_autocheckpoint`): that commit copies the WAL's pages into the database file and fsyncs
it, and every write waiting for the next batch waits with it (~20 ms for 1,000 frames on the
build machine, one commit in a hundred). The writer turns that off
(`PRAGMA wal_autocheckpoint=0`) and tells the checkpointer after each commit
(`after_commit`); the checkpointer runs the checkpoints on a thread and a connection of its
own while the writer goes on committing.

A checkpoint is worth little unless the WAL then starts over from its beginning: a writer
restarts it only if every frame is in the database file when its transaction begins, and
otherwise appends, and the WAL file grows (each commit then also extends the file). Copying
while the writer commits rarely gets to that point, so a round of checkpoints has three
PASSIVE steps (PASSIVE never waits for readers or writers):
1. the bulk: every frame no reader still needs, while the writer goes on committing;
2. again at once: the few frames committed meanwhile. It usually gets to the end of the WAL,
   and then fsyncs the database file, outside the writer's way;
3. holding off the writer (`write_turn`, the lock its batches take): what the writer
   committed during the fsync. Few pages to copy and fsync: the writer waits for that only,
   and its next transaction restarts the WAL.

When: sqlite3 tells no count of the frames a commit wrote, so rounds are counted in commits.
The WAL's frames, which step 3 finds (no writer is committing then), over the commits since
the last round give the frames a commit writes; the next round comes after the commits that
write about `soft_frames` (1,000: SQLite's own threshold).

Never without bound: a reader that stays on an old snapshot keeps every later frame in the
WAL (nothing after its snapshot may be copied, and the WAL cannot restart). Past `hard_bytes`
(64 MiB of WAL file) a round ends with a TRUNCATE checkpoint, holding off the writer: it
waits for such readers (`hard_wait` at most, so the writer is not held off longer), copies
every frame and empties the file. If readers outlast the wait, the next try comes after
`hard_retry`.

Durability is SQLite's: a checkpoint fsyncs the WAL before it copies and the database file
after (this connection has `synchronous=FULL`, like the writer's), and a crash in the middle
of one loses nothing: the frames stay in the WAL until a checkpoint has copied them and
fsynced the database file.

Workers of one `serve --workers N` share the file and each has a checkpointer. SQLite lets one
checkpoint run at a time: a round that finds another running (busy) ends at once, and a step
that finds every frame copied does nothing, so several checkpointers are harmless. Their
rounds follow the whole WAL's growth (step 3 counts every worker's frames), so together they
checkpoint about as often as one would.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("sendguard.store.sqlite")

# A first guess of the frames a commit writes (a message's rows and their indexes), until a
# round has measured it.
_FIRST_FRAMES_PER_COMMIT = 20
_MAX_COMMITS_PER_ROUND = 10_000


@dataclass(frozen=True)
class WalLimits:
    """When the checkpointer checkpoints (see the module docstring)."""

    soft_frames: int = 1000
    hard_bytes: int = 64 * 1024 * 1024
    hard_wait: float = 0.2
    hard_retry: float = 1.0


def _grown(before: int, after: int) -> int:
    """Frames written between two looks at a WAL that holds `before`, then `after` frames
    (fewer: it restarted, and holds only what was written since)."""
    return after - before if after >= before else after


class Checkpointer:
    """The checkpoints of one SQLite database in WAL mode, on a thread of their own.

    `write_turn` holds off this process's writer (and, sharing the file, the other workers'
    writers) while it is held; the writer calls `after_commit` after each commit."""

    def __init__(
        self,
        path: Path,
        limits: WalLimits,
        write_turn: Callable[[], AbstractContextManager[None]],
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.limits = limits
        self._write_turn = write_turn
        self._trace = trace
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._round = threading.Lock()  # held from asking for a round to its end
        self._commits = 0  # commits the writer made (its thread alone counts)
        self._round_at = 0  # `_commits` when the last round held off the writer
        self._every = max(1, limits.soft_frames // _FIRST_FRAMES_PER_COMMIT)
        self._hard_after = 0.0  # monotonic time before which no TRUNCATE is tried again
        self.rounds = 0
        self.truncated = 0
        self.busy = 0

    def start(self) -> None:
        """Begin taking checkpoints (the writer's connection has `wal_autocheckpoint=0`)."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sendguard-sqlite-checkpoint")

    def after_commit(self) -> None:
        """The writer committed: hand a round to the checkpointer's thread when it is due and
        none is under way. On the writer's thread, after the commit; costs next to nothing."""
        self._commits += 1
        if self._executor is None or self._commits - self._round_at < self._every:
            return
        if not self._round.acquire(blocking=False):
            return  # a round is under way
        try:
            self._executor.submit(self._run_round)
        except RuntimeError:  # shut down meanwhile (closing)
            self._round.release()

    def _run_round(self) -> None:
        try:
            self._checkpoint_round(self._connection())
        except sqlite3.Error as exc:
            # Every frame stays in the WAL until a checkpoint has copied it: nothing is lost,
            # and the next round tries again.
            log.warning("WAL checkpoint failed", error=str(exc))
        finally:
            self._round.release()

    def _checkpoint_round(self, conn: sqlite3.Connection) -> None:
        busy, first, _ = self._passive(conn)  # 1: the bulk
        if busy:
            self.busy += 1
            return  # another worker's checkpointer is at it
        _, second, _ = self._passive(conn)  # 2: what was committed meanwhile, and the fsync
        with self._write_turn():  # 3: the rest, holding off the writer
            commits = self._commits - self._round_at
            self._round_at = self._commits
            _, third, _ = self._passive(conn)
            if self._wal_file_size() > self.limits.hard_bytes:
                self._truncate(conn)
        self.rounds += 1
        # The frames written since the last round: the WAL restarted after it (its step 3
        # copied every frame) and perhaps after step 1 or 2 here (then it holds fewer).
        written = first + _grown(first, second) + _grown(second, third)
        if commits > 0 and written > 0:
            # The next round after the commits of this process that write about
            # `soft_frames` frames, all workers' frames counted; not more than twice as many
            # commits as this time.
            every = self.limits.soft_frames * commits // written
            self._every = min(_MAX_COMMITS_PER_ROUND, 2 * self._every, max(1, every))

    def _passive(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    def _truncate(self, conn: sqlite3.Connection) -> None:
        if time.monotonic() < self._hard_after:
            return
        # Waits for readers (the connection's busy timeout: `hard_wait`).
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            self.truncated += 1
            return
        self._hard_after = time.monotonic() + self.limits.hard_retry
        self.busy += 1
        log.warning(
            "WAL past its limit and readers still use it; truncating it again later",
            frames=frames,
            copied=copied,
            limit=self.limits.hard_bytes,
        )

    def _wal_file_size(self) -> int:
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except OSError:
            return 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.limits.hard_wait,  # only TRUNCATE waits (PASSIVE never does)
            )
            conn.set_trace_callback(self._trace)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Wait for a round under way; close the connection."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
