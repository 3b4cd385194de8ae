"""The replay's shortcuts (recorded fingerprints, decoded-message cache, forwards sent without
a claim) give exactly what the long way gives, on a generated history that reaches caps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from sendguard.app import build_policies
from sendguard.config import parse_config
from sendguard.content import Fingerprint, fingerprints
from sendguard.engine import Engine
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.headers import Headers
from sendguard.intake import Intake
from sendguard.message import DeliveryState, Message
from sendguard.metrics import Metrics
from sendguard.simulate.replay import Replay, Replayed
from sendguard.simulate.source import (
    Recorded,
    RecordedEvent,
    RecordedFact,
    RecordedMessage,
    read_store,
)
from sendguard.store import codec
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Action

START = datetime(2026, 11, 2, 8, 0, 0, 123456, tzinfo=UTC)
CANDIDATE = """
policies:
  - plugin: schedule
  - plugin: context
  - plugin: frequency
    options:
      caps:
        - {scope: recipient, limit: 1, window: 1d}
        - {scope: recipient, limit: 3, window: 7d}
      max_delay: 3d
  - plugin: repetition
    options: {limit: 2, window: 30d}
  - plugin: fatigue
"""
PEOPLE = ["Ann@Example.org", "bob@example.org", "carol@example.org", "dan@example.org"]


def history(seed: int, count: int = 160) -> list[Recorded]:
    """`count` messages over 12 days: repeated offers, transactional mail, a not-before, a
    premise with its fact, two recipients on one message, clicks."""
    rng = random.Random(seed)
    items: list[Recorded] = []
    for n in range(count):
        at = START + timedelta(minutes=rng.randrange(12 * 24 * 60), microseconds=n)
        to = tuple(rng.sample(PEOPLE, 2 if n % 9 == 0 else 1))
        headers = [
            "From: shop@example.com",
            f"To: {', '.join(to)}",
            f"Subject: Offer {rng.randrange(6)}",
            f"X-Sendguard-Campaign: c{rng.randrange(3)}",
        ]
        if n % 7 == 0:
            headers.append("X-Sendguard-Class: transactional")
        if n % 11 == 0:
            headers.append(f"X-Sendguard-Not-Before: {(at + timedelta(hours=5)).isoformat()}")
        if n % 13 == 0:
            headers.append(f"X-Sendguard-Requires: meeting:{n}:status=completed")
            fact = Fact(f"meeting:{n}:status", "completed", at + timedelta(hours=2))
            items.append(RecordedFact(fact))
        content = ("\r\n".join(headers) + f"\r\n\r\nHello {n % 5}\r\n").encode()
        items.append(
            RecordedMessage(
                at,
                "shop@example.com",
                to,
                content,
                source_id=f"m{n}",
                fingerprint=fingerprints(content),
            )
        )
        if n % 5 == 0:
            event = Event(EventType.CLICK, to[0], at + timedelta(hours=3), f"m{n}")
            items.append(RecordedEvent(event))
    return items


async def replay(items: list[Recorded], until: datetime | None, shortcuts: bool) -> list[Replayed]:
    settings = parse_config(CANDIDATE, "candidate")
    return await Replay(settings, build_policies(settings), shortcuts=shortcuts).run(items, until)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("until", [None, START + timedelta(days=20)])
async def test_the_shortcuts_replay_exactly_as_the_long_way(
    seed: int, until: datetime | None
) -> None:
    items = history(seed)
    fast = await replay(items, until, shortcuts=True)
    slow = await replay(items, until, shortcuts=False)
    assert fast == slow
    # Not a vacuous comparison: caps were reached, delays were sent later, some were dropped.
    finals = {(row.would, row.final) for row in fast}
    assert (Action.DELAY, DeliveryState.SENT) in finals
    assert any(row.final is DeliveryState.DROPPED for row in fast)
    assert any(row.engaged for row in fast)


async def test_a_wrong_recorded_fingerprint_is_what_the_replay_judges_by() -> None:
    """The fingerprint is taken as recorded (it is not recomputed behind the caller's back):
    the same offer under distinct fingerprints is no longer a repetition."""
    items = history(1)
    relabelled = [
        RecordedMessage(
            i.at,
            i.mail_from,
            i.recipients,
            i.content,
            i.then,
            i.source_id,
            Fingerprint(f"x{n}", ""),
        )
        if isinstance(i, RecordedMessage)
        else i
        for n, i in enumerate(items)
    ]
    honest = await replay(items, None, shortcuts=True)
    relabelled_rows = await replay(relabelled, None, shortcuts=True)
    assert any(r.policy == "repetition" for r in honest)
    assert not any(r.policy == "repetition" for r in relabelled_rows)


def policyless_intake(store: SQLiteStore, clock: FakeClock) -> Intake:
    """An intake with no policies: it stores what it accepts, as `serve` would."""
    settings = parse_config("policies: []\n", "test")
    metrics = Metrics()
    engine = Engine(build_policies(settings), store, clock, metrics)
    return Intake(
        engine, store, clock, metrics, settings.config.headers.sources(), lambda: None, "test"
    )


async def accept_rich_message(store: SQLiteStore, clock: FakeClock) -> tuple[str, str]:
    intake = policyless_intake(store, clock)
    content = (
        "From: Shop <shop@example.com>\r\nTo: Zoë <zoe@example.org>\r\n"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nX-Sendguard-Campaign: Spring\r\n"
        "X-Sendguard-Requires: deal:7:stage=won\r\nX-Sendguard-Wait: 2h\r\n"
        "X-Sendguard-Not-Before: 2026-11-02T10:00:00.5+01:00\r\n"
        "X-Sendguard-Timezone: Europe/Berlin\r\nX-Sendguard-Offer: spring-10\r\n"
        "\r\nHallo\r\n"
    ).encode()
    accepted = await intake.accept(content, "", ["Zoe@Example.org", "bob@example.org"], "http")
    return accepted.deliveries[0].id, accepted.message.id


async def test_a_message_put_in_the_cache_is_the_one_a_read_decodes(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=timedelta(seconds=5))
    await store.open()
    try:
        delivery_id, _ = await accept_rich_message(store, clock)
        first = await store.get_delivery(delivery_id)
        again = await store.get_delivery(delivery_id)
        assert first is not None and again is not None
        assert first.message == again.message
        assert first.message is not again.message  # no cache unless asked for
        with codec.caching_messages() as cache:
            cached = await store.get_delivery(delivery_id)
            cached_again = await store.get_delivery(delivery_id)
            assert cached is not None and cached_again is not None
            assert cached_again.message is cached.message
            assert cache.hits == 1
            assert cached == first
    finally:
        await store.close()


async def test_as_stored_is_what_the_store_reads_back(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=timedelta(seconds=5))
    await store.open()
    try:
        settings = parse_config("policies: []\n", "test")
        metrics = Metrics()
        engine = Engine(build_policies(settings), store, clock, metrics)
        intake = Intake(
            engine, store, clock, metrics, settings.config.headers.sources(), lambda: None, "t"
        )
        content = (
            "From: shop@example.com\r\nTo: zoe@example.org\r\nSubject: Grüße\r\n"
            "X-Sendguard-Requires: deal:7:stage=won\r\nX-Sendguard-Unless: deal:7:stage=lost\r\n"
            "X-Sendguard-Data-As-Of: 2026-11-01T23:59:59.999999Z\r\n"
            "X-Sendguard-Not-Before: 2026-11-02T10:00:00.5+01:00\r\n"
            "X-Sendguard-Class: transactional\r\nX-Sendguard-On-Timeout: drop\r\n\r\nHi\r\n"
        ).encode()
        accepted = await intake.accept(content, "Shop@Example.com", ["Zoë@example.org"], "smtp")
        read = await store.get_delivery(accepted.deliveries[0].id)
        assert read is not None
        assert read.message == codec.as_stored(accepted.message)
    finally:
        await store.close()


def test_the_cache_forgets_the_least_recently_used_message() -> None:
    cache = codec.MessageCache(2)
    a, b, c = (Message(name, START, "http", "", ("x@example.org",), Headers(())) for name in "abc")
    cache.put(a)
    cache.put(b)
    assert cache.get("a") is a  # now b is the least recently used
    cache.put(c)
    assert cache.get("b") is None
    assert cache.get("a") is a
    assert cache.get("c") is c


async def test_a_store_source_carries_the_fingerprints_it_recorded(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=timedelta(seconds=5))
    await store.open()
    try:
        await accept_rich_message(store, clock)
        items = await read_store(store, START - timedelta(days=1), START + timedelta(days=1))
    finally:
        await store.close()
    messages = [i for i in items if isinstance(i, RecordedMessage)]
    assert len(messages) == 1
    assert messages[0].fingerprint is not None
    assert messages[0].fingerprint == fingerprints(messages[0].content)


def test_as_stored_gives_the_time_in_utc_as_a_read_would() -> None:
    berlin = timezone(timedelta(hours=1))
    message = Message("m", START.astimezone(berlin), "http", "", ("x@example.org",), Headers(()))
    stored = codec.as_stored(message)
    assert stored.received_at == message.received_at
    assert stored.received_at.tzinfo is UTC
    in_utc = Message("m", START, "http", "", ("x@example.org",), Headers(()))
    assert codec.as_stored(in_utc) is in_utc
