"""The store contract for approvals bound to content, offers and the global pause."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sendguard.approvals import ContentApproval, GlobalPause
from sendguard.deliveries import NewDelivery
from sendguard.events import Event, EventType
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.store.base import Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message


async def test_approvals_are_kept_per_campaign_newest_first(store: Store) -> None:
    assert list(await store.approvals("cart")) == []
    await store.add_approvals(
        [
            ContentApproval("cart", "aaa", "maria", T0),
            ContentApproval("cart", "bbb", "maria", T0 + timedelta(hours=1)),
            ContentApproval("other", "aaa", "li", T0),
        ]
    )
    await store.add_approvals([ContentApproval("cart", "aaa", "ana", T0 + timedelta(hours=2))])
    got = await store.approvals("cart")
    assert [(a.content_hash, a.approved_by) for a in got] == [("aaa", "ana"), ("bbb", "maria")]
    assert got[0].approved_at == T0 + timedelta(hours=2)


async def test_global_pause_is_durable_state(store: Store) -> None:
    assert await store.get_pause() == GlobalPause()
    await store.set_pause(GlobalPause(True, T0, "ana", "incident"))
    assert await store.get_pause() == GlobalPause(True, T0, "ana", "incident")
    await store.set_pause(GlobalPause(False, T0 + timedelta(minutes=5), "bob"))
    assert (await store.get_pause()).paused is False


async def test_offers_reach_history_and_events(store: Store) -> None:
    message = make_message(("a@example.org", "b@example.org"), None)
    message = replace(
        message, fields=replace(message.fields, offer="spring-sale"), content_hash="h1"
    )
    news = [
        NewDelivery(new_id(), r, DeliveryState.QUEUED, "ok", decision(Verdict.forward()), T0)
        for r in message.recipients
    ]
    await store.add_message(message, b"Subject: x\r\n\r\nx", news)
    history = await store.history("a@example.org", T0 - timedelta(days=1))
    assert [h.offer for h in history] == ["spring-sale"]
    assert (await store.get_message(message.id)).fields.offer == "spring-sale"  # type: ignore[union-attr]
    assert await store.count_content("h1") == 2
    assert await store.count_content("h1", since=T0 + timedelta(seconds=1)) == 0
    assert await store.count_content("h1", before=news[1].id) == 1
    assert await store.count_content("h1", exclude_message=message.id) == 0
    assert await store.count_content("h1", campaign="spring") == 0
    # A threshold check stops counting at what it needs.
    assert await store.count_content("h1", at_most=1) == 1
    assert await store.count_content("h1", at_most=5) == 2
    assert await store.count_content("h1", at_most=0) == 0

    await store.add_event(Event(EventType.PURCHASE, "a@example.org", T0, offer="spring-sale"))
    events = await store.events("a@example.org")
    assert [(e.type, e.offer) for e in events] == [(EventType.PURCHASE, "spring-sale")]


async def test_campaign_volume_counts_since_and_stops_at_at_most(store: Store) -> None:
    message = make_message(("a@example.org", "b@example.org", "c@example.org"), "spring")
    news = [
        NewDelivery(new_id(), r, DeliveryState.QUEUED, "ok", decision(Verdict.forward()), T0)
        for r in message.recipients
    ]
    await store.add_message(message, b"Subject: x\r\n\r\nx", news)
    assert await store.count_campaign("spring", T0 - timedelta(hours=1)) == 3
    assert await store.count_campaign("spring", T0 + timedelta(seconds=1)) == 0
    assert await store.count_campaign("autumn", T0 - timedelta(hours=1)) == 0
    assert await store.count_campaign("spring", T0 - timedelta(hours=1), at_most=2) == 2
    assert await store.count_campaign("spring", T0 - timedelta(hours=1), at_most=9) == 3
