"""The replay's store answers from memory exactly what its SQL answers, read for read."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench.simulate import CANDIDATE as DEFAULTS  # the default caps, repetition and fatigue
from sendguard import intake as intake_module
from sendguard.app import build_policies
from sendguard.approvals import Approval, Campaign
from sendguard.config import parse_config
from sendguard.content import fingerprints
from sendguard.deliveries import HistoryEntry
from sendguard.errors import Conflict
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.message import DeliveryState, MessageClass
from sendguard.recipient import RecipientReads
from sendguard.simulate import replay as replay_module
from sendguard.simulate.replay import Replay, Replayed
from sendguard.simulate.source import Recorded, RecordedEvent, RecordedFact, RecordedMessage
from sendguard.simulate.store import ReplayStore
from sendguard.store.sqlite import SQLiteStore
from sendguard.suppressions import Suppression, SuppressionReason
from sendguard.testing import FakeClock
from sendguard.verdict import Action
from tests.unit.test_simulate_shortcuts import CANDIDATE, history, policyless_intake

START = datetime(2026, 11, 1, tzinfo=UTC)


class CheckedStore(ReplayStore):
    """Answers every read from memory and checks it against the SQL's answer."""

    checked: ClassVar[int] = 0
    # Not raised where found: the engine would count it as the policy's error and go on.
    mismatches: ClassVar[list[tuple[str, Any, Any]]] = []

    async def _both(self, name: str, *args: Any, **kwargs: Any) -> Any:
        memory = await getattr(ReplayStore, name)(self, *args, **kwargs)
        sql = await getattr(SQLiteStore, name)(self, *args, **kwargs)
        if isinstance(sql, RecipientReads):  # each kind as a list
            mine, theirs = (
                (list(r.history), list(r.events), r.suppression, r.timezone) for r in (memory, sql)
            )
            same = mine == theirs
        else:
            same = list(memory) == list(sql) if isinstance(sql, list) else memory == sql
        if not same:
            CheckedStore.mismatches.append((name, memory, sql))
        CheckedStore.checked += 1
        return memory

    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        result: Sequence[HistoryEntry] = await self._both(
            "history", recipient, since, campaign=campaign
        )
        # A campaign's history and a whole one, oldest first, with `sent` from the state now.
        for c in (None, "c0", "c1"):
            await self._both("history", recipient, since - timedelta(days=40), campaign=c)
        return result

    async def send_times(self, since: datetime, **kwargs: Any) -> Sequence[datetime]:
        result: Sequence[datetime] = await self._both("send_times", since, **kwargs)
        if kwargs.get("recipient"):
            for limit in (1, 3, 100, -1):
                for classes in ((), (MessageClass.TRANSACTIONAL,)):
                    await self._both(
                        "send_times",
                        since - timedelta(days=3),
                        recipient=kwargs["recipient"],
                        campaign=kwargs.get("campaign"),
                        exclude_classes=classes,
                        limit=limit,
                    )
        return result

    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        await self._both("events", recipient, None)
        result: Sequence[Event] = await self._both("events", recipient, since)
        return result

    async def get_suppression(self, address: str) -> Suppression | None:
        result: Suppression | None = await self._both("get_suppression", address)
        return result

    async def recipient_reads(
        self, recipient: str, *, history_since: datetime | None, events_since: datetime | None
    ) -> RecipientReads:
        result: RecipientReads = await self._both(
            "recipient_reads", recipient, history_since=history_since, events_since=events_since
        )
        for history_from, events_from in ((None, None), (START, None), (None, START)):
            await self._both(
                "recipient_reads", recipient, history_since=history_from, events_since=events_from
            )
        return result

    async def get_campaign(self, name: str) -> Campaign | None:
        result: Campaign | None = await self._both("get_campaign", name)
        return result

    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        result: Fact | None = await self._both("get_fact", key, contact)
        return result

    async def next_due_at(self) -> datetime | None:
        # Checked now and then only: the SQL's answer writes the held-back rows first, and
        # they should also be seen sent while still held back.
        self.due_reads = getattr(self, "due_reads", 0) + 1
        if self.due_reads % 5:
            return await ReplayStore.next_due_at(self)
        result: datetime | None = await self._both("next_due_at")
        return result


def backlog(count: int, people: int) -> list[Recorded]:
    """bench/simulate.py's traffic: `count` messages over 30 days to `people` people, with a
    click now and then so fatigue and repetition read events."""
    step = timedelta(days=30) / count
    items: list[Recorded] = []
    for n in range(count):
        to = f"person{n % people}@example.org"
        content = (
            f"From: shop@example.com\r\nTo: {to}\r\nSubject: Offer {n % 7}\r\n"
            f"X-Sendguard-Campaign: c{n % 3}\r\n\r\nHello {n % 7}\r\n"
        ).encode()
        at = START + step * n
        items.append(
            RecordedMessage(
                at,
                "shop@example.com",
                (to,),
                content,
                source_id=f"m{n}",
                fingerprint=fingerprints(content),
            )
        )
        if n % 11 == 0:
            items.append(RecordedEvent(Event(EventType.OPEN, to, at + timedelta(hours=1), f"m{n}")))
    return items


def with_zones(items: list[Recorded]) -> list[Recorded]:
    """`items` and time zone facts about two of their recipients (one of them corrected)."""
    zones = [
        Fact("timezone", "America/New_York", START + timedelta(days=2), "Ann@Example.org"),
        Fact("timezone", "Europe/Berlin", START + timedelta(days=3), "bob@example.org"),
        Fact("timezone", "Asia/Tokyo", START + timedelta(days=6), "BOB@example.org"),
    ]
    return [*items, *(RecordedFact(z) for z in zones)]


async def run(
    candidate: str, items: list[Recorded], until: datetime | None, shortcuts: bool
) -> list[Replayed]:
    settings = parse_config(candidate, "candidate")
    return await Replay(settings, build_policies(settings), shortcuts=shortcuts).run(items, until)


@pytest.mark.parametrize(
    ("candidate", "items", "until"),
    [
        (CANDIDATE, with_zones(history(1)), None),
        (CANDIDATE, history(2), START + timedelta(days=25)),
        # The backlog extreme at a small size: 60 a person in a month, against a cap a day.
        (DEFAULTS, backlog(600, 10), START + timedelta(days=60)),
    ],
    ids=["history-1", "history-2", "backlog"],
)
async def test_every_read_from_memory_is_what_sql_answers(
    monkeypatch: pytest.MonkeyPatch, candidate: str, items: list[Recorded], until: datetime | None
) -> None:
    monkeypatch.setattr(replay_module, "ReplayStore", CheckedStore)
    CheckedStore.checked, CheckedStore.mismatches = 0, []
    checked = await run(candidate, items, until, shortcuts=True)
    assert CheckedStore.mismatches == []
    assert CheckedStore.checked > 1000
    # And the replay gives what the long way (every read from SQL) gives.
    assert checked == await run(candidate, items, until, shortcuts=False)
    finals = {(row.would, row.final) for row in checked}
    assert (Action.DELAY, DeliveryState.SENT) in finals


async def test_the_backlog_replays_as_the_long_way() -> None:
    items = backlog(600, 10)
    fast = await run(DEFAULTS, items, None, shortcuts=True)
    assert fast == await run(DEFAULTS, items, None, shortcuts=False)
    assert sum(row.would is Action.DELAY for row in fast) > 300


def dump_tables(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (sorted: a table's rowid is no column, unless it is declared
    as one, as `events.id` is, whose order the rows then show)."""
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        name: sorted((tuple(r) for r in conn.execute(f"SELECT * FROM {name}")), key=repr)
        for name in tables
    }


class DumpedStore(ReplayStore):
    """Holds back the rows of `BATCH` messages (0: none) and keeps every table's rows when
    closed."""

    BATCH: ClassVar[int] = 1000
    dumps: ClassVar[list[dict[str, list[tuple[Any, ...]]]]] = []
    held_writes: ClassVar[int] = 0

    def __init__(self, path: Path) -> None:
        super().__init__(path, batch=self.BATCH)

    def _write_held(self, conn: sqlite3.Connection) -> int:
        DumpedStore.held_writes += 1
        return super()._write_held(conn)

    async def close(self) -> None:
        DumpedStore.dumps.append(await self._db.read(dump_tables))
        await super().close()


@pytest.mark.parametrize(
    ("candidate", "items", "until"),
    [
        (CANDIDATE, with_zones(history(1)), START + timedelta(days=20)),
        (CANDIDATE, history(3), None),
        (DEFAULTS, backlog(600, 10), START + timedelta(days=60)),
    ],
    ids=["history-1", "history-3", "backlog"],
)
async def test_rows_held_back_are_the_rows_written_one_message_at_a_time(
    monkeypatch: pytest.MonkeyPatch, candidate: str, items: list[Recorded], until: datetime | None
) -> None:
    """The same database, row for row, whether intake's rows are held back and written in
    batches (a send while held back writing them as sent) or written at once and then
    updated."""
    monkeypatch.setattr(replay_module, "ReplayStore", DumpedStore)
    DumpedStore.dumps = []
    replays = []
    for batch in (1000, 0):
        # The same ids in both replays (the rows name them): made in order, as new_id's are.
        ids = (f"{n:026d}" for n in itertools.count())
        monkeypatch.setattr(intake_module, "new_id", ids.__next__)
        DumpedStore.BATCH, DumpedStore.held_writes = batch, 0
        replays.append(await run(candidate, items, until, shortcuts=True))
        if batch:
            messages = sum(isinstance(i, RecordedMessage) for i in items)
            assert 0 < DumpedStore.held_writes < messages / 2  # held back, several at a time
        else:
            assert DumpedStore.held_writes == 0
    held, each = DumpedStore.dumps
    assert held == each
    # Not vacuous: every kind of row a replay writes is there.
    assert len(held["deliveries"]) > 150 and len(held["history"]) > 40
    assert held["outcomes"] and held["events"]
    assert replays[0] == replays[1]


async def test_a_read_sees_the_rows_held_back_and_closing_writes_them(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = ReplayStore(tmp_path / "r.db", batch=10)
    await store.open()
    try:
        ids = [await accept(store, clock, f"p{n}@example.org", "one") for n in range(3)]
        assert store.stats.writes == 0  # held back
        delivery = await store.get_delivery(ids[1])
        assert delivery is not None and delivery.state is DeliveryState.QUEUED
        assert store.stats.writes == 3  # the three messages, written at once
        await accept(store, clock, "p9@example.org", "two")
        await store.send_queued(ids[2:], clock.now())  # written before: sent by SQL
        with pytest.raises(Conflict):
            await store.send_queued(ids[2:], clock.now())
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "r.db") as conn:
        rows = conn.execute("SELECT recipient, state FROM deliveries ORDER BY id").fetchall()
    assert rows == [
        ("p0@example.org", "queued"),
        ("p1@example.org", "queued"),
        ("p2@example.org", "sent"),
        ("p9@example.org", "queued"),
    ]


async def test_the_next_due_time_counts_the_rows_held_back(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = ReplayStore(tmp_path / "r.db", batch=10)
    await store.open()
    try:
        first = await accept(store, clock, "ann@example.org", "one")
        assert store.stats.writes == 0
        assert await store.next_due_at() == START  # queued: due now, though held back
        assert store.stats.writes == 0  # and still held back
        await store.send_queued([first], START)
        assert await store.next_due_at() is None
        clock.advance(timedelta(minutes=5))
        await accept(store, clock, "bob@example.org", "two")
        assert await store.next_due_at() == START + timedelta(minutes=5)
        await store.get_delivery(first)  # writes them
        assert store.stats.writes == 2
        assert await store.next_due_at() == START + timedelta(minutes=5)  # now from SQL
    finally:
        await store.close()


async def accept(store: SQLiteStore, clock: FakeClock, to: str, subject: str) -> str:
    intake = policyless_intake(store, clock)
    content = (
        f"From: shop@example.com\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "X-Sendguard-Campaign: c0\r\n\r\nHi\r\n"
    ).encode()
    accepted = await intake.accept(content, "shop@example.com", [to], "http")
    return accepted.deliveries[0].id


async def test_what_memory_does_not_follow_sends_reads_back_to_sql(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = ReplayStore(tmp_path / "r.db")
    await store.open()
    try:
        await accept(store, clock, "ann@example.org", "one")
        assert store.kept
        assert len(await store.history("ann@example.org", START)) == 1
        assert await store.get_campaign("c0") is None
        reads = store.memory_reads
        await store.set_campaign(
            Campaign("c0", Approval.APPROVED, updated_at=clock.now(), updated_by="ops")
        )
        assert not store.kept
        campaign = await store.get_campaign("c0")
        assert campaign is not None and campaign.approval is Approval.APPROVED
        clock.advance(timedelta(minutes=1))
        await accept(store, clock, "ann@example.org", "two")
        assert len(await store.history("ann@example.org", START)) == 2
        await store.add_suppressions(
            [
                Suppression(
                    "ann@example.org", SuppressionReason.UNSUBSCRIBE, "api", clock.now(), "ops"
                )
            ],
            clock.now(),
        )
        assert await store.get_suppression("ann@example.org") is not None
        assert store.memory_reads == reads  # all from SQL since
    finally:
        await store.close()


async def test_a_database_that_holds_records_is_read_from_sql(tmp_path: Path) -> None:
    clock = FakeClock(START)
    first = ReplayStore(tmp_path / "r.db")
    await first.open()
    try:
        await accept(first, clock, "ann@example.org", "one")
    finally:
        await first.close()
    again = ReplayStore(tmp_path / "r.db")
    await again.open()
    try:
        assert not again.kept
        assert len(await again.history("ann@example.org", START)) == 1
    finally:
        await again.close()


async def test_a_dropped_delivery_leaves_the_history_and_a_sent_one_counts_as_sent(
    tmp_path: Path,
) -> None:
    from sendguard.deliveries import Change  # noqa: PLC0415

    clock = FakeClock(START)
    store = ReplayStore(tmp_path / "r.db")
    await store.open()
    try:
        one = await accept(store, clock, "ann@example.org", "one")
        two = await accept(store, clock, "ann@example.org", "two")
        queued = frozenset({DeliveryState.QUEUED})
        await store.change(one, Change(DeliveryState.SENT, "sent", clock.now(), expect=queued))
        await store.change(two, Change(DeliveryState.DROPPED, "no", clock.now(), expect=queued))
        memory = await store.history("ann@example.org", START)
        sql = await SQLiteStore.history(store, "ann@example.org", START)
        assert memory == sql
        assert [(h.delivery_id, h.sent) for h in memory] == [(one, True)]
    finally:
        await store.close()


async def test_the_replay_store_keeps_no_timelines_and_says_so(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = ReplayStore(tmp_path / "r.db")
    await store.open()
    try:
        delivery_id = await accept(store, clock, "ann@example.org", "one")
        with pytest.raises(NotImplementedError, match="keeps no timelines"):
            await store.transitions(delivery_id)
        with pytest.raises(NotImplementedError, match="keeps no timelines"):
            await store.delivery_records([delivery_id])
        delivery = await store.get_delivery(delivery_id)
        assert delivery is not None and delivery.state is DeliveryState.QUEUED
    finally:
        await store.close()


async def test_send_queued_leaves_each_delivery_as_a_change_to_sent_does(tmp_path: Path) -> None:
    from sendguard.deliveries import Change  # noqa: PLC0415
    from sendguard.errors import Conflict  # noqa: PLC0415

    rows = []
    for name, batch in (("change", False), ("batch", True)):
        clock = FakeClock(START)
        store = ReplayStore(tmp_path / f"{name}.db")
        await store.open()
        try:
            made = [await accept(store, clock, f"p{n}@example.org", "one") for n in range(3)]
            clock.advance(timedelta(minutes=5))
            if batch:
                await store.send_queued(made, clock.now())
                with pytest.raises(Conflict):  # none changes when one is not queued
                    await store.send_queued(made[:1], clock.now())
            else:
                for delivery_id in made:
                    await store.change(
                        delivery_id,
                        Change(
                            DeliveryState.SENT,
                            "simulated send",
                            clock.now(),
                            expect=frozenset({DeliveryState.QUEUED}),
                            attempt=True,
                        ),
                    )
            history = [
                (h.delivery_id, h.sent)
                for n in range(3)
                for h in await store.history(f"p{n}@example.org", START)
            ]
            assert history == [(d, True) for d in made]

            def dump(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
                return [
                    tuple(r)
                    for r in conn.execute(
                        "SELECT state, updated_at, due_at, attempts, first_attempt_at,"
                        " last_error, approved_by, override_by, hold_origin, owner, lease_until"
                        " FROM deliveries ORDER BY id"
                    )
                ]

            rows.append(await store._db.read(dump))
        finally:
            await store.close()
    assert rows[0] == rows[1]
    assert {r[0] for r in rows[0]} == {"sent"}
