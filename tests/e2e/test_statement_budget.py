"""The statement budget of a single-recipient message, end to end.

The real path runs in-process: a real SMTP client talks to sendguard's SMTP ingress, the
intake judges the message with the six built-in policies of the embedded default config and
commits it, the dispatcher claims it, marks it `sending`, sends it to a real aiosmtpd sink on
loopback and marks it `sent`. Every statement any connection of the SQLite store runs (the
writer, the point reader, the scanners, transaction control included) is counted with
`sqlite3`'s trace callback. No clock is involved: the count is the guard.

Two kinds of statements are counted apart. A message's own (its inserts, the reads of its
decision, its `sent`) do not depend on timing: at most OWN_BUDGET each. Those shared by a
batch of messages (BEGIN and COMMIT of a group commit, a claim and its transitions, the
dispatcher's look at the next due time) depend on how many messages share one, so on timing:
with 20 sessions they add 2 to 4 per message here. Issue 11 asks for at most 12 in all
(TARGET): that holds only when enough messages share a batch, not yet in every run
(docs/performance.md says what is left). Before this test: 35 in all, most of them a
message's own (savepoints per write, one outcome row per policy, a read around every change,
a history read per cap).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.statements import Relay, count, relay
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

TARGET = 12
"""Issue 11's budget per message in all (not reached in every run, see the module docstring)."""
OWN_BUDGET = 10
"""A message's own statements: 4 inserts, 4 reads for the decision, 2 for `sent`."""
SHARED_BUDGET = 6
"""Statements shared by a batch, per message: 2 to 4 here; more means batching broke."""
CLIENTS = 20
PER_CLIENT = 10


@pytest.fixture
async def traced(tmp_path: Path, sink: Sink) -> AsyncIterator[Relay]:
    """sendguard's SMTP ingress, engine, store and dispatcher, wired as `serve` wires them,
    with the embedded default config (all six built-in policies); bench/statements.py counts
    what its store runs (as `make bench` does)."""
    async with relay(tmp_path, sink.port) as running:
        yield running


async def test_a_single_recipient_message_runs_at_most_10_statements_of_its_own(
    traced: Relay, sink: Sink
) -> None:
    counted = await count(traced, CLIENTS, PER_CLIENT)

    assert len(sink.received) == CLIENTS * PER_CLIENT + 1
    report = f"{counted}:\n{counted.summary}"
    assert counted.own <= OWN_BUDGET, report
    assert counted.shared <= SHARED_BUDGET, report
