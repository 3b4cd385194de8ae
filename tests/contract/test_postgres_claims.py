"""PostgreSQL claims: their cost does not grow with the deliveries sent since the last VACUUM.

A claim's UPDATE and a `sent` change indexed columns, so each leaves its row's old version in
the partial indexes a claim reads (`deliveries_due`, `deliveries_sending`) until a VACUUM
(the test server runs none: autovacuum is off). A bitmap scan of both, as one claim read
them, visited every such version in the table on every claim: those in `deliveries_sending`
were never marked dead. A plain index scan marks the entries of dead rows it meets as dead in
the index (the next scans, bitmap ones too, skip them there): the claim reads
`deliveries_sending` so, and `next_due_at` (before the dispatcher sleeps) `deliveries_due`.
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


def _heap_blocks(plan: dict[str, Any]) -> int:
    """Table pages the claim's scans visited (their index pages not counted)."""
    own = 0
    if plan.get("Relation Name") == "deliveries":
        own = plan.get("Exact Heap Blocks", 0) + plan.get("Lossy Heap Blocks", 0)
        if plan["Node Type"] == "Index Scan":
            # An index scan's buffers are its index pages and the rows it fetched.
            own = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    return own + sum(_heap_blocks(p) for p in plan.get("Plans", ()))


async def test_a_claim_reads_the_old_versions_of_sent_deliveries_once(
    store: PostgresStore,
) -> None:
    # SENT deliveries claimed and sent, as the dispatcher does: each leaves an old version in
    # `deliveries_due` (queued) and one in `deliveries_sending` (whose lease has run out).
    _, news = await add(store, recipients=tuple(f"r{i}@example.org" for i in range(SENT)))
    taken = await store.claim_due(T0, "me", SENT, LEASE, send_within=timedelta(days=1))
    assert len(taken) == SENT
    for delivery in taken:
        await store.change(delivery.id, Change(DeliveryState.SENT, "ok", T0, owner="me"))
    later = T0 + 2 * LEASE
    at = to_micros(later)
    due, args, locked = store._claimable(at, 10)
    due += " LIMIT ?" + ("" if locked else f" {store.claim_lock}")

    async def explain(tx: Any) -> Sequence[Any]:
        return await tx.fetch(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {due}", [*args, 10])

    # The dispatcher looks at the next due time before it sleeps: that index scan marks the
    # old versions in `deliveries_due` before the first live entry.
    assert await store.next_due_at() is None
    first = await store._read(explain)
    again = await store._read(explain)
    assert await store.claim_due(later, "me", 10, LEASE) == []

    # The first scan meets each old version in the table; the next ones skip them in the
    # index. (A bitmap scan of both indexes visits all of them every time.)
    blocks = [_heap_blocks(json.loads(r[0])[0]["Plan"]) for r in (first[0], again[0])]
    assert blocks[0] > 10
    assert blocks[1] <= 10, blocks
    assert len(news) == SENT
