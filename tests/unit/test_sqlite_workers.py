"""SQLite shared by the workers of one `serve --workers N`: the lock handed down, recipient
locks across processes, recovery that spares running siblings."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sendguard.approvals import Approval, Campaign, ContentApproval, GlobalPause
from sendguard.errors import StoreLocked
from sendguard.owner import owner_gone, process_owner
from sendguard.store import open_store
from sendguard.store.host_keyed_lock import HostKeyedLock
from sendguard.store.settings_version import SettingsVersion
from sendguard.store.sqlite import SQLiteStore, lock_for_workers
from tests.contract.test_store import T0, add

LEASE = timedelta(minutes=5)

# Holds the record lock of one key in another process until its stdin closes.
HOLDER = """
import fcntl, os, sys
from sendguard.store.host_keyed_lock import slot
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, slot(sys.argv[2]))
print("held", flush=True)
sys.stdin.read()
"""


async def test_a_key_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "busy@example.org"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == b"held\n"
    locks = HostKeyedLock(path)
    locks.open()
    try:
        taken = asyncio.Event()

        async def take() -> None:
            async with locks.hold(["busy@example.org"]):
                taken.set()

        waiting = asyncio.create_task(take())
        # Another key is free meanwhile.
        async with locks.hold(["free@example.org"]):
            pass
        await asyncio.sleep(0.2)
        assert not taken.is_set()
        holder.stdin.close()
        holder.wait(20)
        holder.stdout.close()
        await asyncio.wait_for(waiting, 20)
        assert taken.is_set()
    finally:
        locks.close()


async def test_keys_that_share_a_byte_wait_for_each_other_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record lock belongs to the process: the second holder must not take (and then
    # release) the byte under the first one.
    monkeypatch.setattr("sendguard.store.host_keyed_lock.slot", lambda key: 7)
    locks = HostKeyedLock(tmp_path / "keys")
    locks.open()
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with locks.hold(["a@example.org"]):
            order.append("a in")
            first_in.set()
            await release_first.wait()
            order.append("a out")

    async def second() -> None:
        await first_in.wait()
        async with locks.hold(["b@example.org"]):
            order.append("b in")

    try:
        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await first_in.wait()
        await asyncio.sleep(0.05)
        release_first.set()
        await asyncio.gather(*tasks)
        assert order == ["a in", "a out", "b in"]
    finally:
        locks.close()


async def test_workers_open_the_file_the_supervisor_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    held = lock_for_workers(open_store(url))
    assert held is not None
    try:
        # Unrelated instances are refused: alone, or as another supervisor.
        with pytest.raises(StoreLocked, match="in use by another sendguard process"):
            await SQLiteStore(tmp_path / "w.db").open()
        with pytest.raises(StoreLocked):
            lock_for_workers(open_store(url))
        # Two workers with the inherited descriptor share it.
        first = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        second = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        await first.open()
        await second.open()
        await add(first, recipients=("x@example.org",))
        assert len(await second.claim_due(T0, "two", 10, LEASE)) == 1
        await first.close()
        await second.close()
    finally:
        os.close(held)
    assert lock_for_workers(open_store("postgresql://localhost/db")) is None


async def test_a_plugged_in_subclass_of_the_sqlite_store_is_shared_by_workers(
    tmp_path: Path,
) -> None:
    # The supervisor and its workers recognise the embedded store by its class, whatever the
    # URL scheme of the backend that made it (tests/store_pkg: `sqlite-dir`).
    url = f"sqlite-dir:///{tmp_path / 'state'}"
    held = lock_for_workers(open_store(url))
    assert held is not None
    try:
        with pytest.raises(StoreLocked, match="in use by another sendguard process"):
            await open_store(url).open()
        workers = [open_store(url), open_store(url)]
        for worker in workers:
            assert isinstance(worker, SQLiteStore)
            worker.serve_as_worker(os.dup(held))
            await worker.open()
        await add(workers[0], recipients=("x@example.org",))
        assert len(await workers[1].claim_due(T0, "two", 10, LEASE)) == 1
        for worker in workers:
            await worker.close()
    finally:
        os.close(held)


async def test_a_descriptor_that_does_not_hold_the_lock_is_refused(tmp_path: Path) -> None:
    held = lock_for_workers(SQLiteStore(tmp_path / "w.db"))
    assert held is not None
    stray = os.open(tmp_path / "w.db.lock", os.O_RDWR)
    try:
        with pytest.raises(StoreLocked, match="not held"):
            await SQLiteStore(tmp_path / "w.db", held_lock=stray).open()
    finally:
        os.close(held)


async def test_a_starting_worker_releases_only_the_claims_of_owners_that_are_gone(
    tmp_path: Path,
) -> None:
    held = lock_for_workers(SQLiteStore(tmp_path / "w.db"))
    assert held is not None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = f"{socket.gethostname()}:{dead.pid}"
    sibling = process_owner()  # a running process
    try:
        store = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
        await store.open()
        await add(store, recipients=("a@example.org",))
        await add(store, recipients=("b@example.org",))
        (claimed_by_dead,) = await store.claim_due(T0, gone, 1, LEASE)
        (claimed_by_sibling,) = await store.claim_due(T0, sibling, 1, LEASE)
        assert await store.recover(T0) == 1
        # The dead owner's delivery is free to claim again; the sibling's lease still holds.
        assert [d.id for d in await store.claim_due(T0, "next", 10, LEASE)] == [claimed_by_dead.id]
        assert claimed_by_sibling.id != claimed_by_dead.id
        await store.close()
    finally:
        os.close(held)


def test_owner_gone() -> None:
    assert not owner_gone(process_owner())
    assert not owner_gone("another-host:1")  # cannot tell: its lease decides
    assert not owner_gone("not an owner")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert owner_gone(f"{socket.gethostname()}:{done.pid}")


async def test_what_every_decision_reads_is_kept_until_a_sibling_writes_it(
    tmp_path: Path,
) -> None:
    # The pause, a campaign's decision and its approvals: read once per worker while nobody
    # writes them, and read again by every worker as soon as any of them writes one.
    held = lock_for_workers(SQLiteStore(tmp_path / "w.db"))
    assert held is not None
    statements: list[str] = []
    reader = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held), trace=statements.append)
    writer = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
    try:
        await reader.open()
        await writer.open()

        async def reads() -> tuple[bool, Campaign | None, int]:
            pause = await reader.get_pause()
            campaign = await reader.get_campaign("spring")
            return pause.paused, campaign, len(await reader.approvals("spring"))

        assert await reads() == (False, None, 0)
        statements.clear()
        assert await reads() == (False, None, 0)
        assert statements == []  # kept: no statement

        await writer.set_pause(GlobalPause(paused=True, updated_at=T0, updated_by="ana"))
        assert (await reads())[0] is True
        spring = Campaign("spring", Approval.APPROVED, updated_at=T0, updated_by="ana")
        await writer.set_campaign(spring)
        assert (await reads())[1] == spring
        approval = ContentApproval("spring", "hash", "ana", T0)
        await writer.add_approvals([approval])
        assert (await reads())[2] == 1
        statements.clear()
        assert await reads() == (True, spring, 1)
        assert statements == []
    finally:
        await reader.close()
        await writer.close()
        os.close(held)


async def test_a_write_that_fails_still_has_every_worker_read_again(tmp_path: Path) -> None:
    held = lock_for_workers(SQLiteStore(tmp_path / "w.db"))
    assert held is not None
    reader = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
    writer = SQLiteStore(tmp_path / "w.db", held_lock=os.dup(held))
    try:
        await reader.open()
        await writer.open()
        assert (await reader.get_pause()).paused is False
        version = SettingsVersion(tmp_path / "w.db.settings")
        version.open()
        before = version.current()
        refuse = sqlite3.connect(tmp_path / "w.db")
        for when in ("INSERT", "UPDATE"):  # the pause's write fails in its transaction
            refuse.execute(
                f"CREATE TRIGGER refuse_{when} BEFORE {when} ON global_pause"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        refuse.commit()
        refuse.close()
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            await writer.set_pause(GlobalPause(paused=True))
        assert version.current() not in (None, before)
        version.close()
        assert (await reader.get_pause()).paused is False  # read again, still not paused
    finally:
        await reader.close()
        await writer.close()
        os.close(held)
