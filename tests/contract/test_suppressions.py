"""Durable suppressions and per-kind pruning, on every store backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sendguard.deliveries import Change
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.message import DeliveryState
from sendguard.pruning import PruneCutoffs
from sendguard.store.base import Store
from sendguard.suppressions import Suppression, SuppressionQuery, SuppressionReason
from tests.contract.test_store import add

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
R = SuppressionReason


def suppression(address: str, reason: R = R.UNSUBSCRIBE, at: datetime = T0) -> Suppression:
    return Suppression(address, reason, "test", at, "ana", "note")


async def test_suppressions_are_added_once_by_recipient_key_and_audited(store: Store) -> None:
    added = await store.add_suppressions(
        [suppression("Ann@Example.org"), suppression("ann@example.org", R.BOUNCE)], T0
    )
    assert list(added) == [True, False]
    got = await store.get_suppression("ANN@example.ORG")
    assert got == suppression("Ann@Example.org")
    assert await store.get_suppression("bob@example.org") is None
    (entry,) = await store.audit()
    assert (entry.actor, entry.action, entry.target) == (
        "ana",
        "suppress",
        "suppression:ann@example.org",
    )
    assert "unsubscribe" in entry.note and entry.at == T0


async def test_suppressions_list_filters_and_pages(store: Store) -> None:
    await store.add_suppressions(
        [suppression(f"u{i}@example.org", R.BOUNCE if i % 2 else R.MANUAL) for i in range(5)], T0
    )
    first = await store.list_suppressions(SuppressionQuery(limit=2))
    assert [s.address for s in first.suppressions] == ["u0@example.org", "u1@example.org"]
    assert first.next == "u1@example.org"
    rest = await store.list_suppressions(SuppressionQuery(after=first.next, limit=10))
    assert [s.address for s in rest.suppressions] == [f"u{i}@example.org" for i in (2, 3, 4)]
    assert rest.next is None
    bounced = await store.list_suppressions(SuppressionQuery(reason=R.BOUNCE))
    assert {s.address for s in bounced.suppressions} == {"u1@example.org", "u3@example.org"}
    one = await store.list_suppressions(SuppressionQuery(address="U4@EXAMPLE.ORG"))
    assert [s.address for s in one.suppressions] == ["u4@example.org"]


async def test_lift_removes_and_audits(store: Store) -> None:
    await store.add_suppressions([suppression("a@example.org", R.COMPLAINT)], T0)
    lifted = await store.lift_suppression("A@example.org", "bob", T0 + timedelta(days=1), "asked")
    assert lifted is not None and lifted.reason is R.COMPLAINT
    assert await store.get_suppression("a@example.org") is None
    assert await store.lift_suppression("a@example.org", "bob", T0) is None
    latest = (await store.audit())[0]
    assert (latest.actor, latest.action, latest.note) == ("bob", "lift", "asked")


async def test_prune_never_forgets_a_suppression(store: Store) -> None:
    await store.add_suppressions([suppression("old@example.org", at=T0 - timedelta(days=3650))], T0)
    await store.add_event(
        Event(EventType.UNSUBSCRIBE, "old@example.org", T0 - timedelta(days=3650))
    )
    assert (await store.audit())[0].at == T0  # audited when it was added, not as dated
    await store.prune(T0 + timedelta(days=3650))
    assert await store.events("old@example.org") == []
    assert await store.get_suppression("old@example.org") is not None


async def test_prune_keeps_each_kind_to_its_own_cutoff(store: Store) -> None:
    _, (done,) = await add(store, recipients=("h@example.org",))
    await store.change(done.id, Change(DeliveryState.SENT, "ok", T0))
    await store.add_event(Event("visit", "h@example.org", T0, offer="o-1"))
    await store.put_fact(Fact("k", "v", T0))
    later = T0 + timedelta(days=1)
    cutoffs = PruneCutoffs(
        deliveries=later, history=T0, events=T0 - timedelta(days=1), facts=None, idempotency=later
    )
    assert await store.prune(cutoffs) == 1
    assert await store.get_delivery(done.id) is None
    # the send still counts for policies reading further back than the timeline is kept
    assert [h.delivery_id for h in await store.history("h@example.org", T0)] == [done.id]
    assert await store.events("h@example.org") == [Event("visit", "h@example.org", T0, offer="o-1")]
    assert await store.get_fact("k") is not None
    await store.prune(PruneCutoffs(None, later, later, later, later))
    assert await store.history("h@example.org", T0) == []
    assert await store.events("h@example.org") == []
    assert await store.get_fact("k") is None
