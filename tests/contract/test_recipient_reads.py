"""What a decision reads about its recipient, at once: the same answer as each read alone
(every backend; the SQL backends answer in one statement)."""

from __future__ import annotations

from datetime import timedelta

from sendguard.deliveries import Change
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.message import DeliveryState
from sendguard.pruning import PruneCutoffs
from sendguard.recipient import RecipientReads
from sendguard.store.base import PolicyReads, Store
from sendguard.suppressions import Suppression, SuppressionReason
from tests.contract.test_store import LEASE, T0, add

S = DeliveryState
DAY = timedelta(days=1)


async def test_one_read_answers_as_the_reads_it_replaces(store: Store) -> None:
    _, (old,) = await add(store, recipients=("Ann@Example.org",))
    _, (sent, _other) = await add(store, recipients=("ann@example.org", "bo@example.org"))
    await store.change(sent.id, Change(S.SENT, "ok", T0))
    await store.add_event(Event(EventType.OPEN, "ann@example.org", T0 - 10 * DAY, "m0"))
    await store.add_event(Event(EventType.CLICK, "ANN@example.org", T0 - DAY, "m1"))
    await store.add_event(Event("visit", "ann@example.org", T0, offer="spring-sale"))
    await store.add_event(Event(EventType.OPEN, "bo@example.org", T0))
    await store.put_fact(Fact("timezone", "Asia/Tokyo", T0, "Ann@example.org", "x"))
    await store.put_fact(Fact("timezone", "Europe/Paris", T0, "bo@example.org"))
    await store.put_fact(Fact("locale", "ja", T0, "ann@example.org"))
    unsubscribed = Suppression(
        "Ann@Example.org", SuppressionReason.UNSUBSCRIBE, "event", T0, "ana", "by mail"
    )
    await store.add_suppressions([unsubscribed], T0)

    since = T0 - 2 * DAY
    got = await store.recipient_reads("ann@example.org", history_since=since, events_since=since)

    assert got == RecipientReads(
        await store.history("ann@example.org", since),
        await store.events("ann@example.org", since),
        await store.get_suppression("ann@example.org"),
        await store.get_fact("timezone", "ann@example.org"),
    )
    # The contract's own answer, for a backend that does not give its own: the same.
    assert got == await PolicyReads.recipient_reads(
        store, "ann@example.org", history_since=since, events_since=since
    )
    assert [(h.delivery_id, h.sent) for h in got.history] in (
        [(old.id, False), (sent.id, True)],
        [(sent.id, True), (old.id, False)],  # both at T0: either order
    )
    assert [str(e.type) for e in got.events] == ["click", "visit"]
    assert got.events[1].offer == "spring-sale" and got.events[0].message_id == "m1"
    assert got.suppression == unsubscribed
    assert got.timezone == Fact("timezone", "Asia/Tokyo", T0, "ann@example.org", "x")


async def test_kinds_left_out_and_a_person_the_store_knows_nothing_about(store: Store) -> None:
    await add(store, recipients=("ann@example.org",))
    await store.add_event(Event(EventType.OPEN, "ann@example.org", T0))

    only_history = await store.recipient_reads(
        "ann@example.org", history_since=T0 - DAY, events_since=None
    )
    assert len(only_history.history) == 1 and not only_history.events
    only_events = await store.recipient_reads(
        "ann@example.org", history_since=None, events_since=T0 - DAY
    )
    assert not only_events.history and len(only_events.events) == 1
    nobody = await store.recipient_reads(
        "nobody@example.org", history_since=T0 - DAY, events_since=T0 - DAY
    )
    assert not nobody.history and not nobody.events
    assert nobody.suppression is None and nobody.timezone is None


async def test_a_send_reads_as_made_from_its_sent_until_its_history_goes(store: Store) -> None:
    """A send counts as made once its delivery is `sent`, whichever write put it there (the
    dispatcher's `finish` under its claim, or `change`), and after retention prunes the
    delivery; reserved while it waits, is deferred or is being sent (schema 17 keeps this on
    the history row, which the recipient read reads alone)."""
    _, (first,) = await add(store, recipients=("ann@example.org",))
    _, (second,) = await add(store, recipients=("Ann@example.org",))

    def made(reads: RecipientReads) -> dict[str, bool]:
        return {h.delivery_id: h.sent for h in reads.history}

    async def read() -> dict[str, bool]:
        got = await store.recipient_reads(
            "ann@example.org", history_since=T0 - DAY, events_since=None
        )
        assert made(got) == {
            h.delivery_id: h.sent for h in await store.history("ann@example.org", T0 - DAY)
        }
        return made(got)

    assert await read() == {first.id: False, second.id: False}
    claimed = await store.claim_due(T0, "me", 10, LEASE)
    assert {d.id for d in claimed} == {first.id, second.id}
    for delivery in claimed:
        await store.change(
            delivery.id, Change(S.SENDING, "attempt 1", T0, owner="me", attempt=True)
        )
    assert await read() == {first.id: False, second.id: False}
    await store.change(
        second.id,
        Change(S.DEFERRED, "421 busy", T0, owner="me", due_at=T0 + timedelta(minutes=1)),
    )
    await store.finish(first.id, Change(S.SENT, "250 ok", T0, owner="me"))
    assert await read() == {first.id: True, second.id: False}

    # The sent delivery goes; its history stays (it goes by its own time).
    await store.prune(PruneCutoffs(T0 + DAY, None, None, None, None))
    assert await store.get_delivery(first.id) is None
    assert await read() == {first.id: True, second.id: False}
    await store.change(second.id, Change(S.SENT, "250 ok", T0))
    assert await read() == {first.id: True, second.id: True}
