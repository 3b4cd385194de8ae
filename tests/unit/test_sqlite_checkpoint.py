"""The WAL checkpoint beside the writer (sqlite_checkpoint.py): it copies the writer's commits
into the database file on its own thread, the writer's own automatic checkpoint still bounds
the WAL when it does not, and the workers sharing one file each run one."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from sendguard.facts import Fact
from sendguard.store import open_store, sqlite_checkpoint, sqlite_db
from sendguard.store.sqlite import SQLiteStore, lock_for_workers
from tests.contract.test_store import T0


def _checkpoints(store: SQLiteStore) -> int:
    checkpointer = store._db._checkpointer  # type: ignore[attr-defined]
    assert checkpointer is not None
    return int(checkpointer.rounds)


async def _until(condition: object, what: str) -> None:
    for _ in range(500):  # bounded: 10 s at most
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"never happened: {what}")


def _facts_in_the_file_alone(path: Path, copy: Path) -> set[str]:
    """The facts the database file holds without its WAL: what checkpoints copied into it."""
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if "facts" not in tables:  # not even the schema copied yet: a new file's is in the WAL
            return set()
        return {key for (key,) in conn.execute("SELECT key FROM facts")}
    finally:
        conn.close()


async def test_the_checkpointer_copies_the_writers_commits_into_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "EVERY", 5)
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    try:
        keys = {f"k:{i}" for i in range(40)}
        for key in sorted(keys):  # one commit each
            await store.put_fact(Fact(key, "v", T0))
        # The 40th commit makes a round due; rounds run on their own thread, not in a commit.
        await _until(lambda: _checkpoints(store) > 0, "a checkpoint")
        await _until(
            lambda: keys <= _facts_in_the_file_alone(tmp_path / "c.db", tmp_path / "copy.db"),
            "every fact in the database file",
        )
    finally:
        await store.close()


async def test_the_writers_commits_do_not_checkpoint_below_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "EVERY", 10**9)  # the checkpointer never runs
    store = SQLiteStore(tmp_path / "n.db")
    await store.open()
    try:
        for i in range(1100):  # more than SQLite's default of 1,000 frames
            await store.put_fact(Fact(f"k:{i}", "v", T0))
        # The writer's automatic checkpoint waits for HARD_CAP frames, not SQLite's 1,000.
        assert _facts_in_the_file_alone(tmp_path / "n.db", tmp_path / "copy.db") == set()
    finally:
        await store.close()


async def test_without_the_checkpointer_the_writer_still_bounds_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "EVERY", 10**9)  # the checkpointer never runs
    monkeypatch.setattr(sqlite_db, "HARD_CAP", 20)
    store = SQLiteStore(tmp_path / "b.db")
    await store.open()
    try:
        for i in range(300):
            await store.put_fact(Fact(f"k:{i}", "v", T0))
        # With the automatic checkpoint off, 300 commits would leave 600 frames or more.
        frame = 4096 + 24
        assert (tmp_path / "b.db-wal").stat().st_size < 60 * frame
        assert len(_facts_in_the_file_alone(tmp_path / "b.db", tmp_path / "copy.db")) > 200
    finally:
        await store.close()


async def test_workers_sharing_a_file_each_checkpoint_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "EVERY", 3)
    path = tmp_path / "w.db"
    held = lock_for_workers(open_store(f"sqlite:///{path}"))
    assert held is not None
    workers = [SQLiteStore(path, held_lock=os.dup(held)) for _ in range(2)]
    try:
        for worker in workers:
            await worker.open()
        keys = {f"w{n}:{i}" for n in range(2) for i in range(60)}

        async def write(n: int) -> None:
            for i in range(60):
                await workers[n].put_fact(Fact(f"w{n}:{i}", "v", T0))

        await asyncio.gather(write(0), write(1))  # their checkpoints overlap now and then
        await _until(lambda: all(_checkpoints(w) > 0 for w in workers), "both checkpointing")
        await _until(
            lambda: keys <= _facts_in_the_file_alone(path, tmp_path / "copy.db"),
            "both workers' facts in the database file",
        )
        for worker in workers:
            assert {f.key for f in [await worker.get_fact(k) for k in keys] if f} == keys
    finally:
        for worker in workers:
            await worker.close()
        os.close(held)
