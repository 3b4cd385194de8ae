"""What a pooled PostgreSQL connection keeps between store calls: no advisory lock.

asyncpg's own reset (four statements on every release) is replaced by the store's, which
unlocks only a connection whose recipients' unlock did not complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from sendguard.approvals import Approval, Campaign, ContentApproval, GlobalPause
from sendguard.errors import StoreUnavailable
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.recipient import TIMEZONE_FACT
from sendguard.store.postgres import (
    _CAMPAIGN_AND_APPROVALS,
    _HANDOVER,
    _LOCK_AND_PAUSE,
    PostgresStore,
    lock_key,
)
from sendguard.suppressions import Suppression, SuppressionReason
from tests.contract.test_store import T0
from tests.support.postgres import DSN, drop_schema, new_schema, reachable

pytestmark = pytest.mark.postgres


@pytest.fixture
async def traced() -> AsyncIterator[tuple[PostgresStore, list[str]]]:
    """A store with one pooled connection, every statement it sends listed."""
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    schema = new_schema()
    sent: list[str] = []
    store = PostgresStore(DSN, schema=schema, pool_size=1, trace=sent.append)
    await store.open()
    try:
        yield store, sent
    finally:
        await store.close()
        await drop_schema(schema)


async def backend_pid(store: PostgresStore) -> int:
    async def job(tx: Any) -> Sequence[Any]:
        return await tx.fetch("SELECT pg_backend_pid()")

    rows = await store._read(job)
    return int(rows[0][0])


async def advisory_locks(pid: int) -> int:
    conn = await asyncpg.connect(DSN)
    try:
        found = await conn.fetchval(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
        )
        return int(found)
    finally:
        await conn.close()


async def test_recipients_locks_end_with_the_block_and_nothing_else_is_sent(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    pid = await backend_pid(store)
    await asyncio.sleep(0.01)  # the query loggers of what ran before
    sent.clear()

    async with store.lock_recipients(["b@example.org", "a@example.org"]):
        assert await advisory_locks(pid) == 2
    await backend_pid(store)

    assert await advisory_locks(pid) == 0
    # Two locks, the unlock, the read: no reset statements on release.
    assert sent == [
        "SELECT pg_advisory_lock($1)",
        "SELECT pg_advisory_lock($1)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT pg_backend_pid()",
    ]


async def test_a_connection_whose_unlock_did_not_complete_is_unlocked_on_release(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, _ = traced
    pid = await backend_pid(store)

    async def job(tx: Any) -> None:
        # As lock_recipients does before locking; its unlock never runs here.
        store._may_hold_locks.add(pid)
        await tx.fetch("SELECT pg_advisory_lock(42)")

    await store._read(job)

    assert await advisory_locks(pid) == 0
    assert await backend_pid(store) == pid  # the same connection, kept


async def test_a_free_recipient_is_locked_with_the_pause_read_in_one_round_trip(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    pid = await backend_pid(store)
    await store.set_pause(GlobalPause(True, T0, "ops", "incident"))
    await asyncio.sleep(0.01)  # the query loggers of what ran before
    sent.clear()

    async with store.lock_recipients(["a@example.org"]):
        # The block's first statement takes the lock: none yet.
        assert await advisory_locks(pid) == 0
        # The decision's read of the pause: the one the lock statement made, once.
        assert await store.get_pause() == GlobalPause(True, T0, "ops", "incident")
        assert await advisory_locks(pid) == 1
        assert sent == [_LOCK_AND_PAUSE]
        assert (await store.get_pause()).paused
        await asyncio.sleep(0.01)  # asyncpg calls its query loggers soon after
        assert sent[1:] == [
            "SELECT paused, updated_at, updated_by, note FROM global_pause WHERE id = 1"
        ]
    await asyncio.sleep(0.01)
    assert sent[2:] == ["SELECT pg_advisory_unlock_all()"]
    assert await advisory_locks(pid) == 0
    # Outside the block, the pause is read as always.
    await store.get_pause()
    await asyncio.sleep(0.01)
    assert len(sent) == 4


async def test_a_pause_set_while_the_lock_is_waited_for_is_seen(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    assert not (await store.get_pause()).paused
    holder = await asyncpg.connect(DSN)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key("a@example.org"))
        seen: list[GlobalPause] = []

        async def decide() -> None:
            async with store.lock_recipients(["A@example.org"]):
                seen.append(await store.get_pause())

        await asyncio.sleep(0.01)  # the query loggers of what ran before
        sent.clear()
        deciding = asyncio.create_task(decide())
        for _ in range(200):  # until the store waits for the lock (bounded: 10 s)
            waiting = await holder.fetchval(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objid = ($1::bigint & x'ffffffff'::bigint)",
                lock_key("a@example.org"),
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting
        # Another instance pauses while this one waits; the lock is then given up.
        other = PostgresStore(DSN, schema=store._schema, pool_size=1)
        await other.open()
        try:
            await other.set_pause(GlobalPause(True, T0, "ops", "now"))
        finally:
            await other.close()
        await holder.execute("SELECT pg_advisory_unlock_all()")
        await asyncio.wait_for(deciding, 10)
    finally:
        await holder.close()
    assert seen == [GlobalPause(True, T0, "ops", "now")]
    await asyncio.sleep(0.01)
    assert sent[:2] == [_LOCK_AND_PAUSE, "SELECT pg_advisory_lock($1)"]


async def test_a_decision_reads_a_campaign_with_its_approvals_in_one_round_trip(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    later = T0 + timedelta(hours=1)
    await store.set_campaign(Campaign("spring", Approval.APPROVED, False, T0, "rita"))
    await store.add_approvals(
        [ContentApproval("spring", "h1", "rita", T0), ContentApproval("spring", "h2", "sam", later)]
    )
    expected = await store.approvals("spring")
    assert [a.content_hash for a in expected] == ["h2", "h1"]  # newest first
    campaign = await store.get_campaign("spring")
    await asyncio.sleep(0.01)  # the query loggers of what ran before
    sent.clear()

    async with store.lock_recipients(["a@example.org"]):
        assert await store.get_campaign("spring") == campaign
        assert await store.approvals("spring") == expected
        await asyncio.sleep(0.01)  # asyncpg calls its query loggers soon after
        assert sent == [_LOCK_AND_PAUSE, _CAMPAIGN_AND_APPROVALS]
        # Once: read again after (an approval may have come meanwhile).
        await store.add_approvals([ContentApproval("spring", "h3", "sam", later)])
        assert [a.content_hash for a in await store.approvals("spring")] == ["h2", "h3", "h1"]
        # A campaign nobody decided on, and one without approvals.
        assert await store.get_campaign("unknown") is None
        assert await store.approvals("unknown") == []
        await store.set_campaign(Campaign("autumn", Approval.APPROVED, True, T0, "rita"))
        assert await store.get_campaign("autumn") == Campaign(
            "autumn", Approval.APPROVED, True, T0, "rita"
        )
        assert await store.approvals("autumn") == []
    # Outside a block, each is read on its own, as always.
    assert await store.get_campaign("spring") == campaign
    assert len(await store.approvals("spring")) == 3


async def test_a_block_without_statements_sends_none(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    await backend_pid(store)
    await asyncio.sleep(0.01)  # the query loggers of what ran before
    sent.clear()

    async with store.lock_recipients(["a@example.org"]):
        pass
    await asyncio.sleep(0.01)

    assert sent == []


async def test_a_decision_s_first_read_takes_the_lock_and_reads_the_rest_in_one_round_trip(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    pid = await backend_pid(store)
    later = T0 + timedelta(hours=1)
    await store.set_pause(GlobalPause(True, T0, "ops", "incident"))
    await store.set_campaign(Campaign("spring", Approval.APPROVED, True, T0, "rita"))
    await store.add_approvals(
        [
            ContentApproval("spring", "h1", "rita", T0),
            ContentApproval("spring", "h2", "sam", later),
            ContentApproval("spring", "h0", "sam", later, "https://a.example/"),
            ContentApproval("spring", "h0", "sam", later),
        ]
    )
    await store.add_event(Event(EventType.CLICK, "a@example.org", T0, "m1", "offer"))
    await store.put_fact(Fact(TIMEZONE_FACT, "Europe/Paris", T0, "a@example.org"))
    await store.add_suppressions(
        [Suppression("A@example.org", SuppressionReason.COMPLAINT, "api", T0, "rita", "n")], T0
    )
    since = T0 - timedelta(days=1)
    expected = await store.recipient_reads("a@example.org", history_since=since, events_since=since)
    assert expected.events and expected.suppression and expected.timezone
    approvals = await store.approvals("spring")
    campaign = await store.get_campaign("spring")
    pause = await store.get_pause()
    await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)  # the query loggers of what ran before
    sent.clear()

    async with store.lock_recipients(["A@example.org"], campaign="spring"):
        reads = await store.recipient_reads(
            "a@example.org", history_since=since, events_since=since
        )
        assert await advisory_locks(pid) == 1
        assert reads == expected
        assert await store.get_campaign("spring") == campaign
        assert await store.approvals("spring") == approvals
        assert await store.get_pause() == pause
        await asyncio.sleep(0.01)  # asyncpg calls its query loggers soon after
        assert len(sent) == 1
        assert sent[0].startswith("SELECT * FROM pg_temp.sendguard_locked_reads_111(")
        # Once each: read again after.
        assert await store.get_campaign("spring") == campaign
        assert await store.get_pause() == pause
        await asyncio.sleep(0.01)
        assert len(sent) == 3
    await asyncio.sleep(0.01)
    assert sent[3:] == ["SELECT pg_advisory_unlock_all()"]
    assert await advisory_locks(pid) == 0
    # Without a campaign, spans or pause row: the same answers as the reads of their own.
    await store.set_pause(GlobalPause())
    async with store.lock_recipients(["a@example.org"]):
        alone = await store.recipient_reads("a@example.org", history_since=None, events_since=None)
        assert not (await store.get_pause()).paused
    assert alone == await store.recipient_reads(
        "a@example.org", history_since=None, events_since=None
    )


async def test_the_first_read_sees_what_the_lock_s_last_holder_committed(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    # Another instance decides about the recipient and commits before its unlock; this one
    # waits for the lock in its first read, whose snapshot must follow the lock (a statement
    # that locked and read in one snapshot would miss that commit).
    store, _ = traced
    other = PostgresStore(DSN, schema=store._schema, pool_size=1)
    await other.open()
    try:
        entered, commit = asyncio.Event(), asyncio.Event()

        async def decide_elsewhere() -> None:
            async with other.lock_recipients(["a@example.org"]):
                await other.get_pause()  # takes the lock
                entered.set()
                await commit.wait()
                await other.add_event(Event(EventType.UNSUBSCRIBE, "a@example.org", T0))

        elsewhere = asyncio.create_task(decide_elsewhere())
        await asyncio.wait_for(entered.wait(), 10)

        async def decide() -> int:
            async with store.lock_recipients(["a@example.org"]):
                reads = await store.recipient_reads(
                    "a@example.org", history_since=None, events_since=T0 - timedelta(days=1)
                )
                return len(reads.events)

        deciding = asyncio.create_task(decide())
        holder = await asyncpg.connect(DSN)
        try:
            for _ in range(200):  # until this store waits for the lock (bounded: 10 s)
                waiting = await holder.fetchval(
                    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid = ($1::bigint & x'ffffffff'::bigint)",
                    lock_key("a@example.org"),
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
        finally:
            await holder.close()
        assert waiting
        commit.set()
        await asyncio.wait_for(elsewhere, 10)
        assert await asyncio.wait_for(deciding, 10) == 1
    finally:
        await other.close()


async def test_a_block_s_commit_holds_the_lock_until_it_is_committed_and_then_gives_it_up(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    store, sent = traced
    pid = await backend_pid(store)
    key = lock_key("a@example.org")
    write = (
        "INSERT INTO global_pause (id, paused, updated_at, updated_by, note)"
        " VALUES (1, 1, 0, 'ops', '')"
    )
    other = await asyncpg.connect(DSN)
    try:

        async def try_lock() -> bool:
            taken = bool(await other.fetchval("SELECT pg_try_advisory_lock($1)", key))
            if taken:
                await other.execute("SELECT pg_advisory_unlock($1)", key)
            return taken

        async def commit(tx: Any) -> None:
            await store._run_all(tx, [(write, [])])
            # The session's lock is given up; the transaction's holds until the commit.
            assert not await try_lock()

        async with store.lock_recipients(["a@example.org"]):
            assert not (await store.get_pause()).paused  # takes the lock
            assert not await try_lock()
            await store._write(commit)
            assert await try_lock()  # committed: free, with no unlock statement
            await asyncio.sleep(0.01)
            handover = _HANDOVER.replace("?", "$1")
            assert sent[-2:] == [f"WITH w0 AS ({write}) {handover}", "COMMIT;"]
            # A statement after the commit takes the lock again; the block's end gives it up.
            assert (await store.get_pause()).paused
            assert not await try_lock()
        assert await try_lock()
        await asyncio.sleep(0.01)
        assert sent[-2:] == [_LOCK_AND_PAUSE, "SELECT pg_advisory_unlock_all()"]
        assert await advisory_locks(pid) == 0
    finally:
        await other.close()


async def test_a_connection_without_the_locked_reads_reads_with_statements_of_its_own(
    traced: tuple[PostgresStore, list[str]],
) -> None:
    # A server that refused the functions at connect (read-only, disk full): the decision
    # still locks and reads, in more round trips.
    store, sent = traced
    pid = await backend_pid(store)

    async def drop(tx: Any) -> None:
        await tx.execute("DROP FUNCTION pg_temp.sendguard_locked_reads_000")

    await store._read(drop)
    await store.add_event(Event(EventType.CLICK, "a@example.org", T0, "m1"))
    await asyncio.sleep(0.01)  # the query loggers of what ran before
    sent.clear()

    async with store.lock_recipients(["a@example.org"]):
        reads = await store.recipient_reads("a@example.org", history_since=None, events_since=None)
        assert await advisory_locks(pid) == 1
        assert not (await store.get_pause()).paused
    await asyncio.sleep(0.01)

    assert reads.events == []  # none asked for
    assert sent[1] == _LOCK_AND_PAUSE
    assert sent[-1] == "SELECT pg_advisory_unlock_all()"
    assert len(sent) == 4  # the function's call, the lock with the pause, the read, the unlock
    assert await advisory_locks(pid) == 0


async def _terminate(pid: int) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "first",
    [
        "get_pause",
        "recipient_reads",
        "get_campaign",
        "approvals",
        "multi_recipient_lock",
    ],
)
async def test_a_block_s_first_statement_on_a_lost_connection_is_store_unavailable(
    traced: tuple[PostgresStore, list[str]], first: str
) -> None:
    """The database gone between a block's connection and its first statement (the lock is
    taken by that statement): whichever call comes first answers StoreUnavailable, which the
    ingresses turn into 451 and 503, never an asyncpg error (a 500). CI met a 500 from the
    HTTP intake with the database gone (test_postgres_cluster)."""
    store, _ = traced
    pid = await backend_pid(store)
    recipients = (
        ["a@example.org", "b@example.org"] if first == "multi_recipient_lock" else ["a@example.org"]
    )

    async def block() -> None:
        async with store.lock_recipients(recipients, campaign="spring"):
            await _terminate(pid)
            await asyncio.sleep(0.05)
            if first in ("get_pause", "multi_recipient_lock"):
                await store.get_pause()
            elif first == "recipient_reads":
                await store.recipient_reads("a@example.org", history_since=None, events_since=None)
            elif first == "get_campaign":
                await store.get_campaign("spring")
            else:
                await store.approvals("spring")

    with pytest.raises(StoreUnavailable):
        await block()
    # The pool replaces the lost connection: the next call works.
    assert not (await store.get_pause()).paused
