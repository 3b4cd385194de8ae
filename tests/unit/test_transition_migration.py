"""Schema 10 keeps a delivery's first and final transitions on its row. A delivery created
before keeps its first one in `transitions`; its timeline reads as one, in order, whatever
happens to it after the upgrade."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from sendguard.deliveries import Change
from sendguard.message import DeliveryState as S
from sendguard.store.sqlite import SQLiteStore
from tests.unit.test_outcome_migration import T0, T1, old_database

T2 = T1 + timedelta(minutes=5)


async def test_a_delivery_created_before_schema_10_is_sent_after_it(tmp_path: Path) -> None:
    path = tmp_path / "sendguard.db"
    old_database(path)
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.change(
            "d2", Change(S.QUEUED, "approved by ana", T1, due_at=T1, expect=frozenset({S.HELD}))
        )
        (claimed,) = await store.claim_due(
            T2, "w", 10, timedelta(minutes=5), send_within=timedelta(days=1)
        )
        assert claimed.id == "d2"
        await store.change("d2", Change(S.SENT, "upstream accepted", T2, owner="w"))
        expected = [
            (T0, S.HELD, "human_hold: campaign spring is not approved yet"),
            (T1, S.QUEUED, "approved by ana"),
            (T2, S.SENDING, "attempt 1"),
            (T2, S.SENT, "upstream accepted"),
        ]
        assert [(t.at, t.state, t.reason) for t in await store.transitions("d2")] == expected
        records = await store.delivery_records(["d1", "d2"])
        assert [(t.at, t.state, t.reason) for t in records["d2"].transitions] == expected
        assert [t.state for t in records["d1"].transitions] == [S.QUEUED, S.SENDING, S.SENT]
    finally:
        await store.close()
    # Where each is kept: the old first in `transitions`, the rest after it, the final on
    # the row.
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT seq, state FROM transitions WHERE delivery_id = 'd2' ORDER BY seq"
        ).fetchall()
        row = conn.execute(
            "SELECT first_state, final_reason FROM deliveries WHERE id = 'd2'"
        ).fetchone()
    assert rows == [(1, "held"), (2, "queued"), (3, "sending")]
    assert row == (None, "upstream accepted")
