"""PostgreSQL claims: their cost does not grow with the deliveries sent since the last VACUUM.

A claim's UPDATE and a `sent` change indexed columns, so each leaves its row's old version in
the partial indexes a claim reads (`deliveries_due`, `deliveries_sending`) until a VACUUM
(the test server runs none: autovacuum is off). A bitmap scan of both, as one claim read
them, visited every such version in the table on every claim: those in `deliveries_sending`
were never marked dead. A plain index scan marks the entries of dead rows it meets as dead in
the index (the next scans, bitmap ones too, skip them there): the claim reads
`deliveries_sending` so, and `next_due_at` (before the dispatcher sleeps) `deliveries_due`,
once no transaction of the server can still see the old version.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from sendguard.clock import to_micros
from sendguard.deliveries import Change
from sendguard.message import DeliveryState
from sendguard.store.postgres import PostgresStore
from tests.contract.test_store import T0, add
from tests.support.postgres import open_store

pytestmark = pytest.mark.postgres
LEASE = timedelta(minutes=5)
SENT = 600


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with open_store(pool_size=1) as opened:
        yield opened


def _scans(plan: dict[str, Any], index: str) -> list[str]:
    """The kinds of the plan's scans of `index`."""
    own = [plan["Node Type"]] if plan.get("Index Name") == index else []
    return own + [kind for p in plan.get("Plans", ()) for kind in _scans(p, index)]


async def test_a_claim_reads_the_sending_index_by_index_scans(store: PostgresStore) -> None:
    # SENT deliveries claimed and sent, as the dispatcher does: each leaves an old version in
    # `deliveries_due` (queued) and one in `deliveries_sending` (whose lease has run out).
    _, news = await add(store, recipients=tuple(f"r{i}@example.org" for i in range(SENT)))
    taken = await store.claim_due(T0, "me", SENT, LEASE, send_within=timedelta(days=1))
    assert len(taken) == len(news)
    for delivery in taken:
        await store.change(delivery.id, Change(DeliveryState.SENT, "ok", T0, owner="me"))
    later = T0 + 2 * LEASE
    due, args, locked = store._claimable(to_micros(later), 10)
    due += " LIMIT ?" + ("" if locked else f" {store.claim_lock}")

    async def explain(tx: Any) -> Sequence[Any]:
        return await tx.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {due}", [*args, 10])

    # Whether an index scan may mark an old version dead depends on the other transactions
    # of the server (none may still see it), so the test holds the plan's shape: only index
    # scans of `deliveries_sending`, which mark; never a bitmap scan, which does not.
    (row,) = await store._read(explain)
    scans = _scans(json.loads(row[0])[0]["Plan"], "deliveries_sending")
    assert scans
    assert set(scans) <= {"Index Scan", "Index Only Scan"}, scans
    assert await store.claim_due(later, "me", 10, LEASE) == []
