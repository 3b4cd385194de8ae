"""PolicyContext reads what policies ask about a recipient once per decision: one statement
(counted with sqlite3's trace callback) answers the history, the events, the suppression and
the time zone fact, exactly as the reads it replaces would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.policy import PolicyContext
from sendguard.store.sqlite import SQLiteStore
from sendguard.suppressions import Suppression, SuppressionReason
from sendguard.testing import make_delivery

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, list[str]]]:
    seen: list[str] = []
    backend = SQLiteStore(tmp_path / "s.db", trace=seen.append)
    await backend.open()
    await backend.add_event(Event(EventType.PURCHASE, "ann@example.org", NOW - 90 * DAY))
    await backend.add_event(Event(EventType.OPEN, "Ann@example.org", NOW - 5 * DAY))
    await backend.put_fact(Fact("timezone", "Asia/Tokyo", NOW - DAY, "ann@example.org"))
    await backend.add_suppressions(
        [Suppression("ann@example.org", SuppressionReason.COMPLAINT, "event", NOW - DAY, "esp")],
        NOW,
    )
    seen.clear()
    yield backend, seen
    await backend.close()


async def test_every_read_about_the_recipient_is_one_statement(
    store: tuple[SQLiteStore, list[str]],
) -> None:
    backend, seen = store
    ctx = PolicyContext(backend, NOW, history_span=30 * DAY, events_span=30 * DAY)
    delivery = make_delivery("ANN@example.org")

    suppression = await ctx.suppression(delivery.recipient)
    events = await ctx.events(delivery.recipient, NOW - 10 * DAY)
    history = await ctx.history(delivery.recipient, NOW - 7 * DAY)
    times = await ctx.send_times(NOW - DAY, recipient=delivery.recipient)
    zone = await ctx.recipient_zone(delivery)

    assert len(seen) == 1, seen
    assert suppression == await backend.get_suppression("ann@example.org")
    assert suppression is not None and suppression.reason is SuppressionReason.COMPLAINT
    assert [e.type for e in events] == [EventType.OPEN]
    assert list(history) == [] and list(times) == []
    assert zone == ZoneInfo("Asia/Tokyo")


async def test_what_lies_beyond_the_spans_is_read_as_asked(
    store: tuple[SQLiteStore, list[str]],
) -> None:
    backend, seen = store
    ctx = PolicyContext(backend, NOW, history_span=30 * DAY, events_span=30 * DAY)
    assert [e.type for e in await ctx.events("ann@example.org", NOW - 10 * DAY)] == [EventType.OPEN]
    # Older than the span, or at any age (repetition's purchases): a read of its own.
    assert [e.type for e in await ctx.events("ann@example.org")] == [
        EventType.PURCHASE,
        EventType.OPEN,
    ]
    assert len(await ctx.events("ann@example.org", NOW - 100 * DAY)) == 2
    assert len(seen) == 3
    # Without spans (a policy reads at any age), nothing is read ahead but the suppression
    # and the time zone.
    seen.clear()
    bare = PolicyContext(backend, NOW)
    assert len(await bare.events("ann@example.org", NOW - 10 * DAY)) == 1
    assert await bare.suppression("ann@example.org") is not None
    assert len(seen) == 2
