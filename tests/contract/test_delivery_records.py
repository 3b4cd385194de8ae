"""Looking up the history of a whole page of deliveries at once (every backend)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sendguard.deliveries import Change, DeliveryQuery, DeliveryRecord
from sendguard.errors import Conflict
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


async def test_a_timeline_from_creation_to_a_final_state_and_beyond(store: Store) -> None:
    # The first and the final transition may be kept apart from the others (SQL backends keep
    # them on the delivery's row): every read shows one timeline in order all the same.
    _, (new,) = await add(store, S.QUEUED, ("a@example.org",), T0)
    (claimed,) = await store.claim_due(
        T0, "worker", 10, timedelta(minutes=5), send_within=timedelta(days=1)
    )
    assert claimed.state is S.SENDING
    sent_at = T0 + timedelta(seconds=1)
    await store.change(new.id, Change(S.SENT, "upstream accepted", sent_at, owner="worker"))
    steps = [(t.at, t.state, t.reason) for t in await store.transitions(new.id)]
    assert steps == [
        (T0, S.QUEUED, f"decided {S.QUEUED}"),
        (T0, S.SENDING, "attempt 1"),
        (sent_at, S.SENT, "upstream accepted"),
    ]
    # A final state ends the claim: its owner cannot change it any more.
    with pytest.raises(Conflict):
        await store.change(new.id, Change(S.FAILED, "late", sent_at, owner="worker"))

    # sendguard never leaves a final state, but the contract does not forbid it: what was
    # final stays in the timeline, in order, and a decision that ends it is shown.
    later = sent_at + timedelta(hours=1)
    await store.change(new.id, Change(S.QUEUED, "sent again by hand", later))
    dropped = decision(Verdict.drop("unsubscribed"))
    await store.change(new.id, Change(S.DROPPED, "judged again", later, decision=dropped))
    records = await store.delivery_records([new.id])
    assert [(t.state, t.reason) for t in records[new.id].transitions] == [
        (S.QUEUED, f"decided {S.QUEUED}"),
        (S.SENDING, "attempt 1"),
        (S.SENT, "upstream accepted"),
        (S.QUEUED, "sent again by hand"),
        (S.DROPPED, "judged again"),
    ]
    assert records[new.id] == DeliveryRecord(
        tuple(await store.transitions(new.id)), tuple(await store.outcomes(new.id))
    )
    assert [(o.at, o.outcome.verdict.action.value) for o in records[new.id].outcomes] == [
        (T0, "forward"),
        (T0, "drop"),
        (later, "drop"),
        (later, "drop"),
    ]
