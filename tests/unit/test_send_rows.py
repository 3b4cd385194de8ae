"""A recipient's sends kept as rows (`sendguard.recipient.SendRows`) against the list of
HistoryEntrys the SQL stores' recipient read made before: the same sequence to whoever reads it
as one, and the same answers from every `PolicyContext` read over them (`history_now`,
`send_times_now`, their microsecond forms `send_micros_now` and `sends_now`, `history`,
`send_times`), at and around the window's edges, over generated rows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from sendguard.clock import from_micros, to_micros
from sendguard.deliveries import HistoryEntry
from sendguard.message import MessageClass
from sendguard.policy import PolicyContext
from sendguard.recipient import SEND_KINDS, RecipientReads, SendRows, micros, send_kind, send_row
from sendguard.store.base import PolicyReads
from sendguard.store.sql_history import SqlHistory

KEY = "ann@example.org"
NOW = datetime(2026, 3, 10, 12, 0, 0, 250_001, tzinfo=UTC)
SPAN = timedelta(days=30)
FROM = micros(NOW - SPAN)
CLASSES = [MessageClass.MARKETING, MessageClass.TRANSACTIONAL]


def _rows(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    """n send rows as the recipient read's statement returns them (`SendRow`), in no order,
    with ties and sends at and just outside the window's start."""
    edges = [FROM - 1, FROM, FROM + 1, micros(NOW), micros(NOW) - 1]
    rows = []
    for i in range(n):
        at = rng.choice(edges) if rng.random() < 0.3 else FROM + rng.randrange(micros(NOW) - FROM)
        rows.append(
            (
                send_kind(rng.choice(CLASSES), rng.random() < 0.5),  # made, or only reserved
                f"d{i:03d}",
                rng.choice([None, "c1", "c2"]),
                rng.choice([None, "h1", "h2"]),
                rng.choice([None, "o1", "O1 "]),
                at,
            )
        )
    return rows


def _entries(rows: Sequence[Sequence[Any]]) -> list[HistoryEntry]:
    """What the read made of `rows` before: an entry each, oldest first (a stable sort)."""
    made = [
        HistoryEntry(
            r[1], KEY, r[2], SEND_KINDS[r[0]][0], r[3], from_micros(r[5]), SEND_KINDS[r[0]][1], r[4]
        )
        for r in rows
    ]
    return sorted(made, key=lambda h: h.at)


class _Reads:
    """A store whose recipient read answers `history` (its other reads are never asked)."""

    def __init__(self, history: Sequence[HistoryEntry]) -> None:
        self.history = history

    async def recipient_reads(self, recipient: str, **_: Any) -> RecipientReads:
        assert recipient == KEY
        return RecipientReads(self.history, (), None, None)


async def _context(history: Sequence[HistoryEntry], now: datetime = NOW) -> PolicyContext:
    ctx = PolicyContext(cast(PolicyReads, _Reads(history)), now, history_span=SPAN)
    await ctx.recipient(KEY)
    return ctx


@pytest.mark.parametrize("n", [0, 1, 2, 7, 40])
def test_rows_read_as_the_entries_they_replace(n: int) -> None:
    rng = random.Random(n)
    for _ in range(20):
        rows = _rows(rng, n)
        sends = SqlHistory._recipient_rows(KEY, rows).history
        assert isinstance(sends, SendRows)
        expected = _entries(rows)
        assert len(sends) == len(expected)  # before any entry is made
        assert sends == expected
        assert expected == sends
        assert list(sends) == expected
        assert list(reversed(sends)) == expected[::-1]
        assert sends[1:3] == expected[1:3]
        if expected:
            assert sends[0] == expected[0]
            assert sends[-1] == expected[-1]
            assert sends.index(expected[-1]) == expected.index(expected[-1])
            assert expected[0] in sends
        assert repr(sends) == repr(expected)
        assert sends != tuple(expected)  # as a list is not a tuple
        assert sends == SendRows(KEY, sorted(rows, key=lambda r: r[5]))


def test_send_rows_are_unhashable_as_a_list_is() -> None:
    with pytest.raises(TypeError):
        hash(SendRows(KEY, []))


def test_a_send_s_kind_is_its_class_and_state() -> None:
    kinds = {send_kind(c, sent) for c in MessageClass for sent in (False, True)}
    assert len(kinds) == 2 * len(MessageClass) and max(kinds) < 0  # no other kind's
    for c in MessageClass:
        for sent in (False, True):
            assert SEND_KINDS[send_kind(c, sent)] == (c, sent)


def test_an_unknown_class_still_fails_the_read() -> None:
    # the statement's CASE gives no kind for a class it does not name
    with pytest.raises(ValueError, match="message class"):
        SqlHistory._recipient_rows(KEY, [(None, "d", None, None, None, FROM)])


def test_micros_is_exact_where_to_micros_is_not() -> None:
    rng = random.Random(1)
    low = 0
    for _ in range(20_000):
        m = rng.randrange(4_000_000_000_000_000)  # to 2096
        at = from_micros(m)
        assert micros(at) == m
        assert send_row(HistoryEntry("d", KEY, None, CLASSES[0], None, at, True))[5] == m
        low += to_micros(at) != m
    assert low > 0  # a float's rounding: why the reads on rows count with `micros`
    other = datetime(2026, 3, 10, 13, tzinfo=timezone(timedelta(hours=1)))
    assert micros(other) == micros(datetime(2026, 3, 10, 12, tzinfo=UTC))


def _sinces(rows: Sequence[Sequence[Any]]) -> list[int]:
    """Window starts at, just before and just after each send, and the edges."""
    found = {FROM, FROM + 1, micros(NOW), micros(NOW) + 1}
    for r in rows:
        found.update((r[5] - 1, r[5], r[5] + 1))
    return sorted(m for m in found if m >= FROM)


@pytest.mark.parametrize("n", [0, 1, 3, 12])
async def test_context_reads_on_rows_answer_as_on_entries(n: int) -> None:
    rng = random.Random(100 + n)
    for _ in range(8):
        rows = _rows(rng, n)
        lazy = await _context(SqlHistory._recipient_rows(KEY, rows).history)
        eager = await _context(_entries(rows))
        for since_us in _sinces(rows):
            since = from_micros(since_us)
            for campaign in (None, "c1", "c2"):
                expected = eager.history_now(KEY, since, campaign=campaign)
                assert expected is not None
                assert lazy.history_now(KEY, since, campaign=campaign) == expected
                assert await lazy.history(KEY, since, campaign=campaign) == expected
                for exclude in ((), [MessageClass.TRANSACTIONAL], CLASSES):
                    for limit in (1, 3, 100):
                        args: dict[str, Any] = {
                            "recipient": KEY,
                            "campaign": campaign,
                            "exclude_classes": exclude,
                            "limit": limit,
                        }
                        times = eager.send_times_now(since, **args)
                        assert times is not None
                        assert lazy.send_times_now(since, **args) == times
                        assert await lazy.send_times(since, **args) == times
                        in_micros = [micros(t) for t in times]
                        assert lazy.send_micros_now(since_us, **args) == in_micros
                        assert eager.send_micros_now(since_us, **args) == in_micros
            as_rows = [send_row(h) for h in eager.history_now(KEY, since) or []]
            assert eager.sends_now(KEY, since_us) == as_rows
            assert list(lazy.sends_now(KEY, since_us) or ()) == as_rows


async def test_entries_made_once_and_only_those_asked_for() -> None:
    rows = _rows(random.Random(5), 6)
    sends = SqlHistory._recipient_rows(KEY, rows).history
    assert isinstance(sends, SendRows)
    ctx = await _context(sends)
    newest = max(r[5] for r in rows)
    assert len(ctx.history_now(KEY, from_micros(newest)) or ()) >= 1
    assert sends._entries is None  # the entries since then only, not kept
    first = sends[0]
    assert sends[0] is first  # made once, then kept
    assert ctx.history_now(KEY, from_micros(FROM))[0] is first  # type: ignore[index]


async def test_reads_on_microseconds_answer_nothing_outside_the_shared_read() -> None:
    rows = _rows(random.Random(6), 4)
    ctx = await _context(SqlHistory._recipient_rows(KEY, rows).history)
    assert ctx.now_micros == micros(NOW)
    assert ctx.send_micros_now(FROM - 1, recipient=KEY) is None
    assert ctx.sends_now(KEY, FROM - 1) is None
    assert ctx.send_micros_now(FROM, recipient="bob@example.org") is None
    assert ctx.sends_now(KEY, FROM) is not None
    # a time whose zone moves its offset: `now_micros - span` is not `now - span` across a
    # change, so these reads give way to the datetime ones
    berlin = await _context(
        SqlHistory._recipient_rows(KEY, rows).history,
        NOW.astimezone(ZoneInfo("Europe/Berlin")),
    )
    assert berlin.send_micros_now(micros(NOW), recipient=KEY) is None
    assert berlin.sends_now(KEY, micros(NOW)) is None
    assert berlin.send_times_now(NOW, recipient=KEY) is not None
