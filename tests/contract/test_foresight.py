"""The webhook outbox and the shadow tallies (every backend)."""

from __future__ import annotations

import json
from datetime import timedelta

from sendguard.deliveries import Change
from sendguard.events import Event, EventType
from sendguard.lifecycle import LifecycleEvent, WebhookTarget, lifecycle_event
from sendguard.message import DeliveryState
from sendguard.reports import QueueAges
from sendguard.store.base import Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, add, decision

S = DeliveryState
E = LifecycleEvent
LEASE = timedelta(minutes=2)
ALL = frozenset(LifecycleEvent)


def test_which_state_changes_are_events() -> None:
    assert lifecycle_event(None, S.QUEUED) is E.FORWARDED
    assert lifecycle_event(None, S.DELAYED) is E.DELAYED
    assert lifecycle_event(S.HELD, S.DELAYED) is E.RELEASED
    assert lifecycle_event(S.DELAYED, S.DELAYED) is None
    assert lifecycle_event(S.QUEUED, S.SENDING) is None
    assert lifecycle_event(S.SENDING, S.DEFERRED) is None
    assert lifecycle_event(S.SENDING, S.SENT) is E.DELIVERED
    assert lifecycle_event(S.SENDING, S.FAILED) is E.FAILED
    assert lifecycle_event(S.HELD, S.DROPPED) is E.DROPPED


async def test_nothing_is_written_without_targets(store: Store) -> None:
    await add(store, S.QUEUED)
    assert await store.pending_webhook_events() == 0


async def test_state_changes_enter_the_outbox_in_order_per_delivery(store: Store) -> None:
    store.set_webhook_targets(
        [WebhookTarget("http://a", ALL), WebhookTarget("http://b", frozenset({E.DELIVERED}))]
    )
    message, (new,) = await add(store, S.HELD, due=None)
    at = T0 + timedelta(minutes=1)
    await store.change(new.id, Change(S.DELAYED, "approved", at, due_at=at))
    await store.change(new.id, Change(S.QUEUED, "judged", at, decision=decision(Verdict.forward())))
    await store.change(new.id, Change(S.SENDING, "attempt 1", at, attempt=True))
    await store.change(new.id, Change(S.SENT, "upstream accepted", at))
    await store.add_event(Event(EventType.BOUNCE, "a@example.org", at, message.id))
    assert await store.pending_webhook_events() == 6

    seen: list[tuple[str, E]] = []
    while True:
        claimed = await store.claim_webhook_events(at, "me", 10, LEASE)
        if not claimed:
            break
        # only the head of each (target, delivery) queue is ever claimable
        assert len({(e.target, e.delivery_id) for e in claimed}) == len(claimed)
        for event in claimed:
            seen.append((event.target, event.event))
            payload = json.loads(event.payload)
            assert payload["type"] == event.event.value
            assert payload["delivery"]["id"] == new.id
            assert payload["delivery"]["message_id"] == message.id
            assert payload["delivery"]["recipient"] == "a@example.org"
            await store.webhook_event_done(event.id)
    assert [e for t, e in seen if t == "http://a"] == [
        E.HELD,
        E.RELEASED,
        E.FORWARDED,
        E.DELIVERED,
        E.BOUNCED,
    ]
    assert [e for t, e in seen if t == "http://b"] == [E.DELIVERED]
    assert await store.pending_webhook_events() == 0


async def test_a_retried_event_blocks_the_next_one_of_its_delivery(store: Store) -> None:
    store.set_webhook_targets([WebhookTarget("http://a", ALL)])
    _, (first,) = await add(store, S.QUEUED)
    _, (other,) = await add(store, S.QUEUED, ("b@example.org",))
    await store.change(first.id, Change(S.DROPPED, "rejected", T0))
    (head, other_head) = await store.claim_webhook_events(T0, "me", 10, LEASE)
    assert (head.delivery_id, head.event) == (first.id, E.FORWARDED)
    assert other_head.delivery_id == other.id
    # claimed: nobody else gets it while the lease runs
    assert await store.claim_webhook_events(T0, "you", 10, LEASE) == []
    await store.webhook_event_retry(head.id, T0 + timedelta(minutes=5), "HTTP 503")
    await store.webhook_event_done(other_head.id)
    # the dropped event waits behind the forwarded one that is not delivered yet
    assert await store.claim_webhook_events(T0 + timedelta(minutes=1), "me", 10, LEASE) == []
    (again,) = await store.claim_webhook_events(T0 + timedelta(minutes=5), "me", 10, LEASE)
    assert (again.id, again.attempts) == (head.id, 1)
    await store.webhook_event_done(again.id)
    (last,) = await store.claim_webhook_events(T0 + timedelta(minutes=5), "me", 10, LEASE)
    assert last.event is E.DROPPED


async def test_shadow_tallies_count_every_shadow_verdict_in_the_window(store: Store) -> None:
    # `decision` records a shadow policy `shadowy` that would drop, beside the enforcing one
    _, old = await add(store, S.QUEUED, ("old@example.org",))
    _, news = await add(store, S.QUEUED, ("a@example.org", "b@example.org"))
    await store.change(
        news[0].id,
        Change(S.DELAYED, "again", T0 + timedelta(hours=1), decision=decision(Verdict.forward())),
    )
    everything = await store.shadow_tallies(T0 - timedelta(days=1), examples=1, top=1)
    (tally,) = everything
    assert tally.policy == "shadowy"
    assert tally.counts == {"drop": 4}
    assert [e.recipient for e in tally.examples] == ["a@example.org"]
    assert tally.examples[0].reason == "would drop"
    assert tally.recipients == [("a@example.org", 2)]
    later = await store.shadow_tallies(T0 + timedelta(minutes=30))
    assert [t.counts for t in later] == [{"drop": 1}]
    assert old and await store.shadow_tallies(T0 + timedelta(days=1)) == []


async def test_queue_ages_name_the_oldest_held_and_the_earliest_due(store: Store) -> None:
    assert await store.queue_ages() == QueueAges(None, None)
    await add(store, S.HELD, due=None)
    await add(store, S.DELAYED, ("b@example.org",), T0 + timedelta(hours=2))
    await add(store, S.QUEUED, ("c@example.org",), T0 + timedelta(hours=1))
    assert await store.queue_ages() == QueueAges(T0, T0 + timedelta(hours=1))
