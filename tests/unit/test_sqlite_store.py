"""SQLite specifics: group commit, a writer that outlives its jobs, single-instance
ownership of the file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from sendguard.approvals import Approval, Campaign, ContentApproval
from sendguard.deliveries import Change
from sendguard.errors import StoreLocked, StoreUnavailable
from sendguard.facts import Fact
from sendguard.message import DeliveryState as S
from sendguard.store import open_store, sqlite_db
from sendguard.store.sql_store import Tx
from sendguard.store.sqlite import SQLiteStore, lock_for_workers
from sendguard.store.sqlite_db import READER_MMAP, WRITER_CACHE_KIB
from tests.contract.test_store import T0, add


async def test_writes_are_group_committed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await store.open()
    try:
        before = store.stats
        await asyncio.gather(*(add(store, recipients=(f"g{i}@example.org",)) for i in range(50)))
        after = store.stats
        assert after.writes - before.writes == 50
        assert after.commits - before.commits < 50
    finally:
        await store.close()


async def test_a_one_statement_write_alone_in_its_batch_is_its_own_commit(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    store = SQLiteStore(tmp_path / "one.db", trace=seen.append)
    await store.open()
    try:
        fact = Fact("meeting:1:status", "completed", T0)
        await store.put_fact(fact)

        async def update(tx: Tx) -> int:
            return await tx.execute("UPDATE facts SET value = 'moved' WHERE key = ?", (fact.key,))

        async def wrong(tx: Tx) -> int:
            return await tx.execute("UPDATE facts SET no_such_column = 1")

        seen.clear()
        assert await store._write_statement(update) == 1
        assert [sql.split()[0] for sql in seen] == ["UPDATE"]  # no BEGIN, no COMMIT
        assert (await store.get_fact(fact.key)).value == "moved"  # type: ignore[union-attr]
        with pytest.raises(sqlite3.OperationalError):  # fails alone; the writer lives on
            await store._write_statement(wrong)
        # Not alone in its batch: inside the batch's transaction.
        seen.clear()
        await asyncio.gather(store._write_statement(update), store.put_fact(fact))
        assert seen[0] == "BEGIN IMMEDIATE"
        assert seen[-1] == "COMMIT"
    finally:
        await store.close()


async def _lingering_store(
    path: Path, linger: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[SQLiteStore, Fact, Callable[[Tx], Awaitable[int]]]:
    monkeypatch.setattr(sqlite_db, "LINGER", linger)
    store = SQLiteStore(path)
    await store.open()
    fact = Fact("meeting:1:status", "completed", T0)
    await store.put_fact(fact)

    async def update(tx: Tx) -> int:
        return await tx.execute("UPDATE facts SET value = 'moved' WHERE key = ?", (fact.key,))

    return store, fact, update


async def test_a_lingering_write_shares_the_next_writes_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long LINGER: only the next write can end the wait within the test's time.
    store, fact, update = await _lingering_store(tmp_path / "l.db", 60.0, monkeypatch)
    try:
        before = store.stats
        lingering = asyncio.create_task(store._write_statement(update, linger=True))
        await asyncio.sleep(0.05)
        assert not lingering.done()  # waiting for company, not committed alone
        assert store.stats == before
        order: list[str] = []
        lingering.add_done_callback(lambda _: order.append("lingering"))
        other = Fact("meeting:2:status", "cancelled", T0)
        async with asyncio.timeout(5):  # the other write is not held up by the lingering
            await store.put_fact(other)
            order.append("other")
            assert await lingering == 1
        # One commit for both; the other write's caller was answered first.
        assert store.stats.writes - before.writes == 2
        assert store.stats.commits - before.commits == 1
        assert order == ["other", "lingering"]
        assert (await store.get_fact(fact.key)).value == "moved"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_lingering_write_alone_commits_when_its_linger_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fact, update = await _lingering_store(tmp_path / "a.db", 0.05, monkeypatch)
    try:
        before = store.stats
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(5):
            assert await store._write_statement(update, linger=True) == 1
        assert loop.time() - started >= 0.04
        assert store.stats.commits - before.commits == 1
        assert (await store.get_fact(fact.key)).value == "moved"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_sent_after_a_send_shares_the_next_writes_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, _ = await _lingering_store(tmp_path / "s.db", 60.0, monkeypatch)
    try:
        _, (new,) = await add(store)
        await store.claim_due(T0, "me", 10, timedelta(minutes=5))
        await store.change(new.id, Change(S.SENDING, "attempt 1", T0, owner="me", attempt=True))
        before = store.stats
        sent = asyncio.create_task(store.change(new.id, Change(S.SENT, "ok", T0, owner="me")))
        await asyncio.sleep(0.05)
        assert not sent.done()  # lingering: no commit of its own yet
        async with asyncio.timeout(5):
            await add(store, recipients=("next@example.org",))
            assert (await sent).state is S.SENT
        assert store.stats.commits - before.commits == 1
    finally:
        await store.close()


async def test_closing_commits_a_lingering_write_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fact, update = await _lingering_store(tmp_path / "c.db", 60.0, monkeypatch)
    try:
        lingering = asyncio.create_task(store._write_statement(update, linger=True))
        await asyncio.sleep(0.05)
        assert not lingering.done()
    finally:
        async with asyncio.timeout(5):
            await store.close()
    assert lingering.result() == 1
    reopened = SQLiteStore(tmp_path / "c.db")
    await reopened.open()
    try:
        assert (await reopened.get_fact(fact.key)).value == "moved"  # type: ignore[union-attr]
    finally:
        await reopened.close()


async def test_a_second_process_cannot_open_the_same_file(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "one.db")
    await first.open()
    try:
        with pytest.raises(StoreLocked):
            await SQLiteStore(tmp_path / "one.db").open()
    finally:
        await first.close()


class Fatal(BaseException):
    """What no `except Exception` catches: stands for anything that ends a task."""


async def test_a_job_that_raises_fails_alone_and_the_writer_lives_on(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    try:

        async def broken(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO facts (key, contact, value, observed_at) VALUES"
                " ('half', '', 'written', 0)"
            )
            raise KeyError("a bug in a job")

        async def foreign_await(tx: Tx) -> None:
            await asyncio.sleep(0)  # a job may await only its transaction: drive refuses

        fact = Fact("meeting:1:status", "completed", T0)
        async with asyncio.timeout(10):  # a dead writer would hang here
            results = await asyncio.gather(
                store._write(broken),
                store._write(foreign_await),
                store.put_fact(fact),
                return_exceptions=True,
            )
            assert isinstance(results[0], KeyError)
            assert isinstance(results[1], RuntimeError)
            assert results[2] is None
            # later writes still work, and the broken job left nothing behind
            later = Fact("meeting:2:status", "cancelled", T0)
            await store.put_fact(later)
        assert await store.get_fact("meeting:1:status") == fact
        assert await store.get_fact("meeting:2:status") == later
        assert await store.get_fact("half") is None
        await store.check()
    finally:
        await store.close()


async def test_a_writer_that_dies_makes_the_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "dead.db")
    await store.open()
    try:

        def fatal(conn: sqlite3.Connection) -> None:
            raise Fatal("the writer's end")

        async with asyncio.timeout(10):  # every write below would hang on a dead writer
            waiting = asyncio.ensure_future(store.put_fact(Fact("k", "v", T0)))
            with pytest.raises(StoreUnavailable):
                await store._db.write(fatal)
            with pytest.raises(StoreUnavailable):
                await waiting
            with pytest.raises(StoreUnavailable, match="writer stopped"):
                await store.put_fact(Fact("k", "v", T0))
            with pytest.raises(StoreUnavailable, match="writer stopped"):
                await store.check()
    finally:
        await store.close()


async def test_only_a_scratch_store_gives_up_durability(tmp_path: Path) -> None:
    durable = SQLiteStore(tmp_path / "durable.db")
    scratch = SQLiteStore(tmp_path / "scratch.db", scratch=True)
    await durable.open()
    await scratch.open()
    try:
        for store in (durable, scratch):
            await add(store, recipients=("pragma@example.org",))
        durable_conn = sqlite3.connect(tmp_path / "durable.db")
        try:
            assert durable_conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            durable_conn.close()

        async def pragmas(tx: Tx) -> list[object]:
            rows = [
                *await tx.fetch("PRAGMA synchronous"),
                *await tx.fetch("PRAGMA journal_mode"),
            ]
            return [r[0] for r in rows]

        assert await scratch._read(pragmas) == [0, "memory"]  # OFF, in memory
        assert await durable._write(pragmas) == [2, "wal"]  # FULL, write-ahead log

        # A failing write is undone alone; what was written before stays, and is read.
        async def half_done(tx: Tx) -> None:
            await tx.execute("UPDATE deliveries SET campaign = 'changed'")
            raise ValueError("half done")

        async def campaigns(tx: Tx) -> list[object]:
            return [r[0] for r in await tx.fetch("SELECT DISTINCT campaign FROM deliveries")]

        with pytest.raises(ValueError, match="half done"):
            await scratch._write(half_done)
        assert await scratch._read(campaigns) == ["spring"]
    finally:
        await durable.close()
        await scratch.close()


async def test_readers_map_the_file_and_see_every_commit(tmp_path: Path) -> None:
    # Past SQLite's 2 MB page cache every B-tree page a point read touched was a read()
    # system call (about 14 per decision at 10^6 deliveries): the readers map the file.
    store = SQLiteStore(tmp_path / "mapped.db")
    await store.open()
    try:

        async def mmap_size(tx: Tx) -> object:
            return (await tx.fetch("PRAGMA mmap_size"))[0][0]

        assert await store._read(mmap_size) == READER_MMAP
        assert await store._scan(mmap_size) == READER_MMAP
        assert await store._write(mmap_size) == 0  # the writer writes as before

        # ... and keeps a larger page cache instead: the index leaves its inserts touch,
        # spread over the file, were re-read with a pread() each past SQLite's 2 MB.
        async def cache_size(tx: Tx) -> object:
            return (await tx.fetch("PRAGMA cache_size"))[0][0]

        assert await store._write(cache_size) == -WRITER_CACHE_KIB
        assert await store._read(cache_size) == -2000  # SQLite's default: the map serves it

        async def count(tx: Tx) -> object:
            return (await tx.fetch("SELECT COUNT(*) FROM deliveries"))[0][0]

        # What is committed is read, from the WAL and from the mapped file once checkpointed
        # there (the file grew meanwhile: the readers map the new pages too).
        for i in range(3):
            await add(store, recipients=(f"r{i}@example.org",))
            assert await store._read(count) == i + 1
            assert await store._scan(count) == i + 1
            outside = sqlite3.connect(tmp_path / "mapped.db")
            try:
                busy, _, _ = outside.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                outside.close()
            assert busy == 0
            assert await store._read(count) == i + 1
            assert await store._scan(count) == i + 1
    finally:
        await store.close()


async def test_alone_a_campaign_row_is_read_once_until_it_is_written(tmp_path: Path) -> None:
    # Every decision of a campaign reads its row (human_hold, the kill switch). Alone, the
    # file lock means only this process writes it, through `set_campaign`.
    statements: list[str] = []
    store = SQLiteStore(tmp_path / "c.db", trace=statements.append)
    await store.open()
    try:

        def reads() -> int:
            return sum("FROM campaigns" in s for s in statements)

        assert await store.get_campaign("spring") is None
        assert await store.get_campaign("spring") is None  # its absence is kept too
        assert reads() == 1
        approved = Campaign("spring", Approval.APPROVED, False, T0, "ann")
        await store.set_campaign(approved)
        assert await store.get_campaign("spring") == approved
        assert await store.get_campaign("spring") == approved
        assert reads() == 2
        paused = Campaign("spring", Approval.APPROVED, True, T0, "bob")
        await store.set_campaign(paused)
        assert await store.get_campaign("spring") == paused
        assert await store.get_campaign("autumn") is None
        assert reads() == 4
    finally:
        await store.close()


async def test_a_worker_reads_the_campaign_row_a_sibling_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    held = lock_for_workers(open_store(url))
    assert held is not None
    try:
        first = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        second = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        await first.open()
        await second.open()
        try:
            assert await first.get_campaign("spring") is None
            approved = Campaign("spring", Approval.APPROVED, False, T0, "ann")
            await second.set_campaign(approved)
            assert await first.get_campaign("spring") == approved
        finally:
            await first.close()
            await second.close()
    finally:
        os.close(held)


async def test_alone_a_campaigns_approvals_are_read_once_until_one_is_added(
    tmp_path: Path,
) -> None:
    # human_hold reads them for every decision of an approved campaign whose approvals are
    # bound to the content (make bench's config). Alone, only `add_approvals` writes them.
    statements: list[str] = []
    store = SQLiteStore(tmp_path / "a.db", trace=statements.append)
    await store.open()
    try:

        def reads() -> int:
            # The reads of the approvals (a new file's schema migration copies the table too).
            return sum(s.startswith("SELECT") and "FROM approvals" in s for s in statements)

        assert list(await store.approvals("spring")) == []
        assert list(await store.approvals("spring")) == []  # none approved is kept too
        assert reads() == 1
        first = ContentApproval("spring", "sha256:aa", "ann", T0)
        await store.add_approvals([first])
        assert list(await store.approvals("spring")) == [first]
        assert list(await store.approvals("spring")) == [first]
        assert reads() == 2
        newer = ContentApproval("spring", "sha256:bb", "bob", T0 + timedelta(hours=1))
        again = ContentApproval("spring", "sha256:aa", "cy", T0 + timedelta(hours=2))
        await store.add_approvals([newer, again])
        assert list(await store.approvals("spring")) == [again, newer]
        assert list(await store.approvals("autumn")) == []
        assert reads() == 4
    finally:
        await store.close()


async def test_a_worker_reads_the_approvals_a_sibling_adds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    held = lock_for_workers(open_store(url))
    assert held is not None
    try:
        first = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        second = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        await first.open()
        await second.open()
        try:
            assert list(await first.approvals("spring")) == []
            approval = ContentApproval("spring", "sha256:aa", "ann", T0)
            await second.add_approvals([approval])
            assert list(await first.approvals("spring")) == [approval]
        finally:
            await first.close()
            await second.close()
    finally:
        os.close(held)


def test_none_and_bytes_bind_through_their_registered_adapters_unchanged() -> None:
    # sendguard.store.sqlite_db registers them (imported above): a table look-up instead of
    # sqlite3's failing attribute look-ups for every None and bytes value bound.
    for kind in (type(None), bytes):
        assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters
    db = sqlite3.connect(":memory:")
    try:
        row = db.execute(
            "SELECT ? IS NULL, typeof(?), ?, typeof(?)", (None, None, b"\x00a\r\n", b"")
        ).fetchone()
    finally:
        db.close()
    assert row == (1, "null", b"\x00a\r\n", "blob")
