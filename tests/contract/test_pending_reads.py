"""PendingReads: a store's reads with decisions not committed yet, answered as the store
answers once they are (the earlier messages of one ESP request, `Intake.accept_many`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sendguard.deliveries import NewDelivery
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.pending_reads import PendingReads
from sendguard.resend import CopyQuery
from sendguard.store.base import Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message

S = DeliveryState
DAY = T0 - timedelta(days=1)


def _new(recipient: str, state: DeliveryState = S.QUEUED) -> NewDelivery:
    verdict = Verdict.forward() if state is S.QUEUED else Verdict.hold("review")
    return NewDelivery(new_id(), recipient, state, "ok", decision(verdict))


async def test_reads_count_what_is_pending_as_if_committed(store: Store) -> None:
    committed = make_message(("ana@example.org",))
    await store.add_message(committed, b"x", [_new("ana@example.org")])
    pending = make_message(("Ana@Example.org", "ben@example.org"))
    held = make_message(("cy@example.org",))
    reads = PendingReads(store)
    assert len(await reads.history("ana@example.org", DAY)) == 1
    reads.add(pending, b"pending", [_new("Ana@Example.org"), _new("ben@example.org")])
    reads.add(held, b"held", [_new("cy@example.org", S.HELD)])

    assert len(await reads.history("ana@example.org", DAY)) == 2
    assert len(await reads.history("ana@example.org", DAY, campaign="other")) == 0
    assert len(await reads.send_times(DAY, recipient="ana@example.org")) == 2
    assert len(await reads.send_times(DAY, domain="Example.org")) == 3
    assert len(await reads.send_times(DAY, domain="example.org", limit=2)) == 2
    assert await reads.send_times(DAY, recipient="cy@example.org") == []  # held: no send
    both = await reads.recipient_reads("ana@example.org", history_since=DAY, events_since=None)
    assert len(both.history) == 2
    # Every delivery counts for the campaign and the content, held ones too.
    assert await reads.count_campaign("spring", DAY) == 4
    assert await reads.count_campaign("spring", DAY, at_most=3) == 3
    hash_ = pending.content_hash
    assert await reads.count_content(hash_, since=DAY) == 4
    assert await reads.count_content(hash_, since=DAY, exclude_message=pending.id) == 2
    assert await reads.message_content(held.id) == b"held"
    # The store itself is unchanged.
    assert len(await store.history("ana@example.org", DAY)) == 1


async def test_copies_pending_in_the_request_count_as_committed(store: Store) -> None:
    query = CopyQuery(99, DAY)
    committed = make_message(("ana@example.org",))
    first = replace(_new("ana@example.org"), resend_key=99)
    await store.add_message(committed, b"x", [first])
    pending = make_message(("Ana@Example.org", "ben@example.org"))
    copy = replace(_new("Ana@Example.org", S.HELD), resend_key=99)
    other = replace(_new("ben@example.org"), resend_key=98)
    reads = PendingReads(store)
    reads.add(pending, b"pending", [copy, other])

    found = await reads.earlier_copies("ana@example.org", query)
    assert [c.delivery_id for c in found] == [first.id, copy.id]
    both = await reads.recipient_reads(
        "ana@example.org", history_since=None, events_since=None, copies=query
    )
    assert [c.delivery_id for c in both.copies] == [first.id, copy.id]
    assert await reads.earlier_copies("ben@example.org", query) == []
