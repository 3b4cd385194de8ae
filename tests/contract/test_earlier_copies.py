"""The resend check's read (every backend): a recipient's deliveries of earlier copies of a
message, by the resend key kept on each delivery, alone (`earlier_copies`) and with the rest of
what a decision reads about the recipient (`recipient_reads(copies=...)`, one statement in the
SQL backends)."""

from __future__ import annotations

from datetime import timedelta

from sendguard.deliveries import NewDelivery
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.resend import Copy, CopyQuery
from sendguard.store.base import PolicyReads, Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message

S = DeliveryState
KEY = 0x5E_6D_00_11
OTHER_KEY = -(2**63)  # the smallest key the column holds
HOUR = timedelta(hours=1)


async def add_keyed(
    store: Store,
    recipients: tuple[str, ...],
    key: int | None,
    at_offset: timedelta = timedelta(0),
    state: DeliveryState = S.QUEUED,
) -> list[NewDelivery]:
    """A message received at T0 + `at_offset`, its deliveries kept under resend key `key`."""
    message = make_message(recipients)
    message = type(message)(**{**message.__dict__, "received_at": T0 + at_offset})
    verdict = Verdict.drop("copy") if state is S.DROPPED else Verdict.forward()
    news = [
        NewDelivery(new_id(), r, state, f"decided {state}", decision(verdict), resend_key=key)
        for r in recipients
    ]
    await store.add_message(message, b"Subject: Hi\r\n\r\nbody\r\n", news)
    return news


async def test_copies_are_the_recipient_s_deliveries_with_the_key_since_the_window(
    store: Store,
) -> None:
    (too_old,) = await add_keyed(store, ("ann@example.org",), KEY, -25 * HOUR)
    first, _bo = await add_keyed(store, ("Ann@Example.org", "bo@example.org"), KEY, -2 * HOUR)
    (dropped,) = await add_keyed(store, ("ann@example.org",), KEY, -HOUR, S.DROPPED)
    await add_keyed(store, ("ann@example.org",), OTHER_KEY, -HOUR)  # another message
    await add_keyed(store, ("ann@example.org",), None, -HOUR)  # no key: never a copy
    await add_keyed(store, ("cy@example.org",), KEY, -HOUR)  # another person
    await add_keyed(store, ("ann@example.org",), KEY, -HOUR, S.FAILED)  # it reached nobody

    query = CopyQuery(KEY, T0 - 24 * HOUR)
    copies = await store.earlier_copies("ANN@example.org", query)

    # Any state but failed (a dropped copy counts: a third try is a copy too), oldest first.
    assert [c.delivery_id for c in copies] == [first.id, dropped.id]
    assert copies[0] == Copy(copies[0].message_id, first.id, T0 - 2 * HOUR)
    assert too_old.id not in {c.delivery_id for c in copies}
    assert await store.earlier_copies("dee@example.org", query) == []
    assert [c.delivery_id for c in await store.earlier_copies("x", CopyQuery(OTHER_KEY, T0))] == []


async def test_the_decision_s_one_read_answers_the_copies_with_the_rest(store: Store) -> None:
    first, _ = await add_keyed(store, ("ann@example.org", "bo@example.org"), KEY, -HOUR)
    since = T0 - 24 * HOUR
    query = CopyQuery(KEY, since)

    for history, events in ((since, since), (None, None), (since, None)):
        without = await store.recipient_reads(
            "Ann@example.org", history_since=history, events_since=events
        )
        got = await store.recipient_reads(
            "Ann@example.org", history_since=history, events_since=events, copies=query
        )
        assert without.copies == ()
        assert [c.delivery_id for c in got.copies] == [first.id]
        assert got.copies == tuple(await store.earlier_copies("ann@example.org", query))
        # Everything else as without the copies.
        assert (got.history, got.events, got.suppression, got.timezone) == (
            without.history,
            without.events,
            without.suppression,
            without.timezone,
        )
        # The contract's own answer, for a backend that does not give its own: the same.
        default = await PolicyReads.recipient_reads(
            store, "ann@example.org", history_since=history, events_since=events, copies=query
        )
        assert default.copies == got.copies
        assert list(default.history) == list(got.history)
    nobody = await store.recipient_reads(
        "cy@example.org", history_since=since, events_since=since, copies=query
    )
    assert nobody.copies == ()


async def test_a_pruned_delivery_takes_its_key_with_it(store: Store) -> None:
    (old,) = await add_keyed(store, ("ann@example.org",), KEY, -48 * HOUR, S.DROPPED)
    (kept,) = await add_keyed(store, ("ann@example.org",), KEY, -HOUR, S.DROPPED)
    query = CopyQuery(KEY, T0 - 72 * HOUR)
    assert len(await store.earlier_copies("ann@example.org", query)) == 2

    await store.prune(T0 - 24 * HOUR)

    assert [c.delivery_id for c in await store.earlier_copies("ann@example.org", query)] == [
        kept.id
    ]
    assert old.id != kept.id
