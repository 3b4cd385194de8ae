"""Looking up the history of a whole page of deliveries at once (every backend)."""

from __future__ import annotations

from datetime import timedelta

from sendguard.deliveries import Change, DeliveryQuery, DeliveryRecord
from sendguard.message import DeliveryState
from sendguard.store.base import Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, add, decision

S = DeliveryState


async def test_records_of_many_deliveries_match_the_one_at_a_time_answers(store: Store) -> None:
    _, delayed = await add(store, S.DELAYED, ("a@example.org", "b@example.org"), T0)
    _, (held,) = await add(store, S.HELD, ("c@example.org",), None)
    await store.change(
        delayed[0].id,
        Change(S.QUEUED, "due", T0 + timedelta(hours=1), decision=decision(Verdict.forward())),
    )
    ids = [delayed[0].id, held.id, delayed[1].id]

    records = await store.delivery_records([*ids, "no-such-delivery", held.id])

    assert list(records) == [*ids, "no-such-delivery"]
    for delivery_id in ids:
        assert records[delivery_id] == DeliveryRecord(
            tuple(await store.transitions(delivery_id)), tuple(await store.outcomes(delivery_id))
        )
    assert [t.state for t in records[delayed[0].id].transitions] == [S.DELAYED, S.QUEUED]
    assert len(records[delayed[0].id].outcomes) == 4
    assert records["no-such-delivery"] == DeliveryRecord()
    assert await store.delivery_records([]) == {}


async def test_records_of_a_page_larger_than_one_statement(store: Store) -> None:
    recipients = tuple(f"r{i}@example.org" for i in range(1100))
    await add(store, S.HELD, recipients, None)
    page = await store.list_deliveries(DeliveryQuery(limit=1100))
    records = await store.delivery_records([d.id for d in page.deliveries])
    assert len(records) == 1100
    assert all(
        [t.state for t in r.transitions] == [S.HELD] and len(r.outcomes) == 2
        for r in records.values()
    )
