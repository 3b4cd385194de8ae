"""The statement budget of a single-recipient message, end to end.

The real path runs in-process: a real SMTP client talks to sendguard's SMTP ingress, the
intake judges the message with the six built-in policies of the embedded default config and
commits it, claimed by the dispatcher at once if it has room (else the dispatcher claims it
and marks it `sending`), the dispatcher sends it to a real aiosmtpd sink on loopback and
marks it `sent`. Every statement any connection of the SQLite store runs (the
writer, the point reader, the scanners, transaction control included) is counted with
`sqlite3`'s trace callback. No clock is involved: the count is the guard.

Issue 11's budget: at most 12 statements per message in all (TARGET), with 20 sessions sending
at once (as `make bench` does), with 5, and with a lone sender (one session, one message after
another: no batch to share a commit with; 14.5 before claims at intake). Two kinds are also
counted apart, as a diagnosis of a failure. A message's own (its inserts, the reads of its
decision, its `sent`) do not depend on timing: OWN_BUDGET each. Those shared by a batch of
messages (BEGIN and COMMIT of a group commit, a claim and its transitions, the dispatcher's look
at the next due time) depend on how many messages share one, so on timing: about 3 to 4 per
message here (more means batching broke). Before this test: 35 in all, most of them a message's
own (savepoints per write, one outcome row per policy, a read around every change, a history
read per cap); docs/performance.md says what each cut gave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.statements import TARGET, Relay, count, relay
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

OWN_BUDGET = 7.5
"""A message's own statements: 3 inserts (message, delivery, history), 2 reads for the
decision (what policies read about the recipient, human_hold's blast count), 1 for `sent` —
6; and its `attempt 1` transition when it is claimed as it is committed (the dispatcher had
room: no claim of its own, which a batch would have shared) — 7 at most."""
SHARED_BUDGET = 6
"""Statements shared by a batch, per message: 3 to 4 here; more means batching broke."""
MESSAGES = 200


@pytest.fixture
async def traced(tmp_path: Path, sink: Sink) -> AsyncIterator[Relay]:
    """sendguard's SMTP ingress, engine, store and dispatcher, wired as `serve` wires them,
    with the embedded default config (all six built-in policies); bench/statements.py counts
    what its store runs (as `make bench` does)."""
    async with relay(tmp_path, sink.port) as running:
        yield running


@pytest.mark.parametrize("sessions", [20, 5, 1])
async def test_a_single_recipient_message_runs_at_most_12_statements(
    traced: Relay, sink: Sink, sessions: int
) -> None:
    counted = await count(traced, sessions, MESSAGES // sessions)

    assert len(sink.received) == MESSAGES + 1
    report = f"{counted} with {sessions} sessions:\n{counted.summary}"
    print(report)  # shown with -s: what docs/performance.md reports
    assert counted.total <= TARGET, report
    assert counted.own <= OWN_BUDGET, report
    assert counted.shared <= SHARED_BUDGET, report


PG_OWN_BUDGET = 4.5
"""A message's own round trips on PostgreSQL: its recipient's advisory lock taken by the
decision's first read, which reads the global pause (which another instance may change) and
the campaign with it (one call of a server-side function), human_hold's blast count, its
writes as one statement that also hands the lock to its transaction (no unlock after), its
`sent` — 4 (6 when the lock and the pause were one statement, the recipient's read another
and the unlock a third; 7 before the pause was read with the lock)."""
PG_TARGET = 10
"""In all on PostgreSQL, claims and the next due time included (16.3 before the cuts of
docs/performance.md's PostgreSQL section: a reset per pool release, BEGIN/COMMIT per write)."""


@pytest.mark.postgres
async def test_a_single_recipient_message_on_postgresql_takes_at_most_10_round_trips(
    tmp_path: Path, sink: Sink
) -> None:
    # Every statement the pool's connections send is one round trip (and one more the first
    # time a connection prepares it): transaction control and asyncpg's reset included.
    async with relay(tmp_path, sink.port, postgres=True) as traced:
        counted = await count(traced, 20, MESSAGES // 20)

    assert len(sink.received) == MESSAGES + 1
    report = f"{counted} on PostgreSQL:\n{counted.summary}"
    print(report)
    assert counted.own <= PG_OWN_BUDGET, report
    assert counted.total <= PG_TARGET, report
