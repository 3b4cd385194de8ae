"""The store contract. Written against `Store` only, so every backend must pass it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sendguard.approvals import Approval, Campaign
from sendguard.audit import AuditEntry
from sendguard.deliveries import (
    Change,
    DeliveryQuery,
    IdempotencyRecord,
    IntakeClaim,
    NewDelivery,
    NewMessage,
)
from sendguard.errors import Conflict
from sendguard.events import Event, EventType
from sendguard.facts import Fact
from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import DeliveryState, Message, MessageClass, Requirement, SendguardFields
from sendguard.offload import LARGE
from sendguard.store.base import Store
from sendguard.verdict import Decision, Mode, PolicyOutcome, Verdict
from tests.contract.conftest import SIMULATE_SCRATCH

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
S = DeliveryState


def make_message(
    recipients: tuple[str, ...] = ("a@example.org",), campaign: str | None = "spring"
) -> Message:
    return Message(
        id=new_id(),
        received_at=T0,
        ingress="smtp",
        mail_from="shop@example.com",
        recipients=recipients,
        headers=Headers((("Subject", "Hi ünïcode"), ("X-Campaign", "spring"))),
        fields=SendguardFields(
            campaign=campaign,
            message_class=MessageClass.MARKETING,
            requires=(Requirement("meeting:1:status", "completed"),),
            wait=timedelta(hours=2),
            not_before=T0 + timedelta(hours=1),
            timezone="Europe/Berlin",
        ),
        size=5,
    )


def decision(verdict: Verdict) -> Decision:
    return Decision.of(
        [
            PolicyOutcome("schedule", verdict),
            PolicyOutcome("shadowy", Verdict.drop("would drop"), Mode.SHADOW),
        ]
    )


async def add(
    store: Store,
    state: DeliveryState = S.QUEUED,
    recipients: tuple[str, ...] = ("a@example.org",),
    due: datetime | None = T0,
    campaign: str | None = "spring",
) -> tuple[Message, list[NewDelivery]]:
    message = make_message(recipients, campaign)
    verdict = {
        S.QUEUED: Verdict.forward(),
        S.DELAYED: Verdict.delay(due or T0, "later"),
        S.HELD: Verdict.hold("review"),
        S.DROPPED: Verdict.drop("no"),
    }[state]
    news = [
        NewDelivery(new_id(), r, state, f"decided {state}", decision(verdict), due)
        for r in recipients
    ]
    await store.add_message(message, b"Subject: Hi\r\n\r\nbody\r\n", news)
    return message, news


async def test_message_round_trip(store: Store) -> None:
    message, _ = await add(store, recipients=("a@example.org", "b@example.org"))
    assert await store.get_message(message.id) == message
    assert await store.message_content(message.id) == b"Subject: Hi\r\n\r\nbody\r\n"
    deliveries = await store.deliveries_of(message.id)
    assert [d.recipient for d in deliveries] == ["a@example.org", "b@example.org"]
    assert all(d.message == message and d.state is S.QUEUED for d in deliveries)
    assert await store.get_message("nope") is None
    with pytest.raises(Conflict):
        await store.message_content("nope")


@pytest.mark.parametrize("size", [LARGE, LARGE + 1, 6 << 20])
async def test_large_content_round_trips_and_is_loaded_off_the_loop(
    store: Store, size: int, request: pytest.FixtureRequest
) -> None:
    message = make_message()
    content = (bytes(range(256)) * (size // 256 + 1))[:size]
    # Held, so its content is not kept in memory at commit: this reads it from the store.
    news = [NewDelivery(new_id(), "a@example.org", S.HELD, "h", decision(Verdict.hold("r")))]
    await store.add_message(message, content, news)
    loading = asyncio.create_task(store.message_content(message.id))
    turns = 0
    while not loading.done():
        turns += 1
        await asyncio.sleep(0)
    assert await loading == content
    # simulate's scratch store runs everything inline by design: a replay has no loop to share.
    if size > LARGE and request.node.callspec.params["store"] != SIMULATE_SCRATCH:
        # Interleaving: other tasks ran while it loaded (SQLite reads small rows inline).
        assert turns >= 2


async def test_transitions_and_outcomes_are_kept(store: Store) -> None:
    _, (new,) = await add(store, S.DELAYED, due=T0 + timedelta(hours=1))
    outcomes = await store.outcomes(new.id)
    assert [
        (o.outcome.policy, o.outcome.verdict.action.value, o.outcome.mode) for o in outcomes
    ] == [("schedule", "delay", Mode.ENFORCE), ("shadowy", "drop", Mode.SHADOW)]
    assert outcomes[0].outcome.verdict.until == T0 + timedelta(hours=1)
    changed = await store.change(
        new.id,
        Change(S.QUEUED, "due", T0 + timedelta(hours=1), decision=decision(Verdict.forward("ok"))),
    )
    assert changed.state is S.QUEUED
    history = await store.transitions(new.id)
    assert [(t.state, t.reason) for t in history] == [
        (S.DELAYED, "decided delayed"),
        (S.QUEUED, "due"),
    ]
    assert history[1].at == T0 + timedelta(hours=1)
    assert len(await store.outcomes(new.id)) == 4


async def test_add_message_is_atomic(store: Store) -> None:
    message, news = await add(store)
    duplicate = NewDelivery(
        news[0].id, "x@example.org", S.QUEUED, "dup", decision(Verdict.forward()), T0
    )
    other = make_message()
    with pytest.raises(Exception):  # noqa: B017 - any backend error, as long as nothing stays
        await store.add_message(other, b"x", [duplicate])
    assert await store.get_message(other.id) is None
    assert len(await store.deliveries_of(message.id)) == 1


async def test_claim_only_due_work_and_never_twice(store: Store) -> None:
    _, (due,) = await add(store, S.QUEUED, due=T0)
    _, (later,) = await add(store, S.DELAYED, due=T0 + timedelta(hours=1))
    await add(store, S.HELD, due=None)
    await add(store, S.DROPPED, due=None)

    first = await store.claim_due(T0, "one", 10, LEASE)
    assert [d.id for d in first] == [due.id]
    assert await store.claim_due(T0, "two", 10, LEASE) == []
    assert await store.next_due_at() == T0

    both = await asyncio.gather(
        store.claim_due(T0 + timedelta(hours=2), "a", 10, LEASE),
        store.claim_due(T0 + timedelta(hours=2), "b", 10, LEASE),
    )
    # At T0+2h the first claim's lease has run out too: each delivery goes to exactly one owner.
    assert sorted(d.id for batch in both for d in batch) == sorted([due.id, later.id])


async def test_lease_expiry_hands_work_to_another_owner(store: Store) -> None:
    _, (new,) = await add(store)
    await store.claim_due(T0, "dead", 10, LEASE)
    await store.change(new.id, Change(S.SENDING, "attempt 1", T0, owner="dead", attempt=True))
    assert await store.claim_due(T0 + timedelta(minutes=1), "alive", 10, LEASE) == []
    (taken,) = await store.claim_due(T0 + LEASE + timedelta(seconds=1), "alive", 10, LEASE)
    assert taken.id == new.id and taken.state is S.SENDING and taken.attempts == 1
    with pytest.raises(Conflict):
        await store.change(new.id, Change(S.SENT, "late", T0, owner="dead"))
    sent = await store.change(new.id, Change(S.SENT, "ok", T0, owner="alive"))
    assert sent.state is S.SENT


async def test_a_claim_takes_every_kind_of_claimable_delivery_up_to_its_limit(
    store: Store,
) -> None:
    early, minute = T0 - timedelta(hours=3), timedelta(minutes=1)
    # Left `sending` by an owner whose lease ran out, and by one that released it.
    _, (expired,) = await add(store, due=early)
    await store.claim_due(early, "dead", 10, LEASE)
    await store.change(
        expired.id, Change(S.SENDING, "attempt 1", early, owner="dead", attempt=True)
    )
    _, (released,) = await add(store, due=early)
    assert [d.id for d in await store.claim_due(early + minute, "gone", 10, LEASE)] == [released.id]
    await store.change(
        released.id, Change(S.SENDING, "attempt 1", early, owner="gone", attempt=True)
    )
    await store.release([released.id], "gone")
    _, (due,) = await add(store, due=T0 - timedelta(hours=1))
    _, (last,) = await add(store, due=T0)
    await add(store, S.DELAYED, due=T0 + timedelta(hours=1))

    first = await store.claim_due(T0, "me", 2, LEASE)
    second = await store.claim_due(T0, "you", 2, LEASE)
    assert len(first) == len(second) == 2
    taken = {d.id for d in [*first, *second]}
    assert taken == {expired.id, released.id, due.id, last.id}
    assert await store.claim_due(T0, "else", 2, LEASE) == []


async def test_a_claim_at_intake_leaves_what_a_claim_leaves(
    store: Store, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["store"] == SIMULATE_SCRATCH:
        pytest.skip("a replay store takes no claim at intake: it has no dispatcher")
    # One message, three recipients: sent now (claimed at intake), one due later and one held
    # (neither claimed: only what is to be sent at once is).
    message = make_message(("now@example.org", "later@example.org", "held@example.org"))
    news = [
        NewDelivery(new_id(), "now@example.org", S.QUEUED, "go", decision(Verdict.forward()), T0),
        NewDelivery(
            new_id(),
            "later@example.org",
            S.QUEUED,
            "go later",
            decision(Verdict.forward()),
            T0 + timedelta(hours=1),
        ),
        NewDelivery(new_id(), "held@example.org", S.HELD, "hold", decision(Verdict.hold("r"))),
    ]
    claim = IntakeClaim("intake", T0 + LEASE)
    await store.add_message(message, b"Subject: Hi\r\n\r\nbody\r\n", news, claim=claim)
    now, later, held = news

    # Compared with the same delivery claimed by claim_due.
    _, (other,) = await add(store, recipients=("other@example.org",))
    (claimed,) = await store.claim_due(T0, "claimer", 10, LEASE, send_within=timedelta(days=5))
    assert claimed.id == other.id
    mine = await store.get_delivery(now.id)
    assert mine is not None
    assert (
        (mine.state, mine.attempts, mine.first_attempt_at, mine.updated_at)
        == (
            claimed.state,
            claimed.attempts,
            claimed.first_attempt_at,
            claimed.updated_at,
        )
        == (S.SENDING, 1, T0, T0)
    )
    assert [(t.state, t.reason) for t in await store.transitions(now.id)] == [
        (S.QUEUED, "go"),
        (S.SENDING, "attempt 1"),
    ]
    assert [(t.state, t.reason) for t in await store.transitions(now.id)] == [
        (t.state, t.reason.replace("decided queued", "go"))
        for t in await store.transitions(other.id)
    ]
    # Leased to the intake's owner: no one else takes it before the lease ends, and it is
    # not due work any more (the delivery due later is).
    assert await store.claim_due(T0, "else", 10, LEASE) == []
    assert await store.next_due_at() == T0 + timedelta(hours=1)
    with pytest.raises(Conflict):
        await store.change(now.id, Change(S.SENT, "not mine", T0, owner="else"))
    sent = await store.change(now.id, Change(S.SENT, "upstream accepted", T0, owner="intake"))
    assert sent.state is S.SENT and sent.attempts == 1
    assert (await store.get_delivery(later.id)).state is S.QUEUED  # type: ignore[union-attr]
    assert (await store.get_delivery(held.id)).state is S.HELD  # type: ignore[union-attr]
    # It counts in the send history like any forwarded delivery.
    history = await store.history("now@example.org", T0 - timedelta(days=1))
    assert [h.delivery_id for h in history] == [now.id]


async def test_a_claim_at_intake_ends_with_its_lease_or_a_release(
    store: Store, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["store"] == SIMULATE_SCRATCH:
        pytest.skip("a replay store takes no claim at intake: it has no dispatcher")
    message = make_message(("a@example.org", "b@example.org"))
    news = [
        NewDelivery(new_id(), r, S.QUEUED, "go", decision(Verdict.forward()), None)
        for r in message.recipients
    ]
    await store.add_message(message, b"x", news, claim=IntakeClaim("gone", T0 + LEASE))
    await store.release([news[0].id], "gone")
    hour = timedelta(hours=1)
    assert [d.id for d in await store.claim_due(T0, "next", 10, hour)] == [news[0].id]
    (taken,) = await store.claim_due(T0 + LEASE + timedelta(seconds=1), "later", 10, LEASE)
    assert taken.id == news[1].id


async def test_release_and_recover_make_claims_available(store: Store) -> None:
    _, (a,) = await add(store)
    _, (b,) = await add(store)
    await store.claim_due(T0, "me", 10, LEASE)
    await store.release([a.id], "me")
    assert [d.id for d in await store.claim_due(T0, "you", 10, LEASE)] == [a.id]
    # recover() frees abandoned claims at once where the backend can know them abandoned
    # (SQLite: one process owns the file); in any case they return when the lease ends.
    await store.recover(T0)
    later = T0 + LEASE + timedelta(seconds=1)
    assert {d.id for d in await store.claim_due(later, "later", 10, LEASE)} == {a.id, b.id}


async def test_change_guards(store: Store) -> None:
    _, (new,) = await add(store, S.HELD, due=None)
    with pytest.raises(Conflict):
        await store.change(new.id, Change(S.QUEUED, "approve", T0, expect=frozenset({S.DELAYED})))
    with pytest.raises(Conflict):
        await store.change("missing", Change(S.QUEUED, "x", T0))
    approved = await store.change(
        new.id, Change(S.QUEUED, "approved", T0, due_at=T0, expect=frozenset({S.HELD}))
    )
    assert approved.state is S.QUEUED and approved.due_at == T0


async def test_finish_changes_as_change_does_without_handing_back(store: Store) -> None:
    """`finish` (the dispatcher's `sent`, `failed`, `deferred`): the same write and guards
    as `change`, nothing read back."""
    _, (new,) = await add(store)
    (claimed,) = await store.claim_due(T0, "me", 10, LEASE)
    sending = await store.change(
        claimed.id, Change(S.SENDING, "attempt 1", T0, owner="me", attempt=True)
    )
    with pytest.raises(Conflict):  # another owner's claim
        await store.finish(new.id, Change(S.SENT, "250 ok", T0, owner="you"))
    with pytest.raises(Conflict):
        await store.finish("missing", Change(S.SENT, "250 ok", T0, owner="me"))
    assert await store.finish(new.id, Change(S.SENT, "250 ok", T0, owner="me")) is None
    done = await store.get_delivery(new.id)
    assert done is not None and done.state is S.SENT
    assert done.attempts == sending.attempts == 1
    with pytest.raises(Conflict):  # the claim ended with the final state
        await store.finish(new.id, Change(S.FAILED, "again", T0, owner="me"))
    record = (await store.delivery_records([new.id]))[new.id]
    assert [t.state for t in record.transitions][-1] is S.SENT
    assert record.transitions[-1].reason == "250 ok"


async def test_history_reserved_confirmed_and_released(store: Store) -> None:
    _, (sent,) = await add(store, recipients=("P@Example.org",))
    _, (dropped,) = await add(store, recipients=("p@example.org",), campaign="other")
    _, (held,) = await add(store, S.HELD, recipients=("p@example.org",), due=None)

    history = await store.history("p@example.org", T0 - timedelta(days=1))
    assert {h.delivery_id for h in history} == {sent.id, dropped.id}
    assert all(not h.sent for h in history)
    spring = await store.history("p@example.org", T0 - timedelta(days=1), campaign="spring")
    assert [h.delivery_id for h in spring] == [sent.id]
    assert spring[0].message_class is MessageClass.MARKETING

    await store.change(sent.id, Change(S.SENT, "ok", T0))
    await store.change(dropped.id, Change(S.DROPPED, "unsubscribed meanwhile", T0))
    history = await store.history("p@example.org", T0 - timedelta(days=1))
    assert [(h.delivery_id, h.sent) for h in history] == [(sent.id, True)]
    assert await store.history("p@example.org", T0 + timedelta(seconds=1)) == []

    await store.change(held.id, Change(S.QUEUED, "approved", T0 + timedelta(minutes=1)))
    history = await store.history("p@example.org", T0 - timedelta(days=1))
    assert {h.delivery_id for h in history} == {sent.id, held.id}


async def test_facts_keep_the_newest_observation(store: Store) -> None:
    await store.put_fact(Fact("meeting:1:status", "scheduled", T0))
    await store.put_fact(Fact("meeting:1:status", "completed", T0 + timedelta(hours=1)))
    await store.put_fact(Fact("meeting:1:status", "stale", T0 + timedelta(minutes=30)))
    await store.put_fact(Fact("timezone", "Europe/Berlin", T0, contact="a@example.org"))
    fact = await store.get_fact("meeting:1:status")
    assert fact == Fact("meeting:1:status", "completed", T0 + timedelta(hours=1))
    assert await store.get_fact("timezone") is None
    assert (await store.get_fact("timezone", "a@example.org")) == Fact(
        "timezone", "Europe/Berlin", T0, "a@example.org"
    )


async def test_events(store: Store) -> None:
    await store.add_event(Event(EventType.OPEN, "A@example.org", T0, "m1"))
    await store.add_event(Event(EventType.UNSUBSCRIBE, "a@example.org", T0 + timedelta(hours=1)))
    events = await store.events("a@example.org")
    assert [e.type for e in events] == [EventType.OPEN, EventType.UNSUBSCRIBE]
    assert events[0].message_id == "m1"
    assert len(await store.events("a@example.org", T0 + timedelta(minutes=1))) == 1


async def test_campaigns_and_audit(store: Store) -> None:
    assert await store.get_campaign("spring") is None
    campaign = Campaign("spring", Approval.APPROVED, False, T0, "ana")
    await store.set_campaign(campaign)
    assert await store.get_campaign("spring") == campaign
    await store.set_campaign(Campaign("spring", Approval.APPROVED, True, T0, "bob"))
    assert (await store.get_campaign("spring")) == Campaign(
        "spring", Approval.APPROVED, True, T0, "bob"
    )

    await store.add_audit(AuditEntry(T0, "ana", "approve", "campaign:spring", "looks fine", 3))
    await store.add_audit(AuditEntry(T0, "bob", "pause", "campaign:spring"))
    entries = await store.audit()
    assert [(e.actor, e.action, e.count) for e in entries] == [
        ("bob", "pause", 0),
        ("ana", "approve", 3),
    ]
    assert entries[1].note == "looks fine" and entries[1].id is not None


async def test_idempotency_key_is_used_once(store: Store) -> None:
    message = make_message()
    record = IdempotencyRecord("key-1", message.id, b'{"id": "x"}')
    news = [NewDelivery(new_id(), "a@example.org", S.QUEUED, "ok", decision(Verdict.forward()), T0)]
    await store.add_message(message, b"x", news, record)
    assert await store.idempotent_response("key-1", T0 - timedelta(hours=24)) == record
    assert await store.idempotent_response("key-1", T0 + timedelta(seconds=1)) is None
    again = make_message()
    with pytest.raises(Conflict):
        await store.add_message(again, b"x", [], IdempotencyRecord("key-1", again.id, b"{}"))
    assert await store.get_message(again.id) is None


async def test_add_messages_commits_all_with_the_answer_or_none(store: Store) -> None:
    def one(recipient: str) -> NewMessage:
        message = make_message((recipient,))
        new = NewDelivery(new_id(), recipient, S.QUEUED, "ok", decision(Verdict.forward()))
        return NewMessage(message, b"Subject: Hi\r\n\r\nbody\r\n", [new])

    batch = [one("a@example.org"), one("b@example.org"), one("a@example.org")]
    record = IdempotencyRecord("batch-1", batch[-1].message.id, b"202")
    await store.add_messages(batch, record)
    for item in batch:
        assert await store.get_message(item.message.id) is not None
    assert await store.idempotent_response("batch-1", T0 - timedelta(hours=1)) == record
    assert len(await store.history("a@example.org", T0 - timedelta(days=1))) == 2

    # The key was used: nothing of the second batch is committed.
    again = [one("c@example.org"), one("d@example.org")]
    with pytest.raises(Conflict):
        await store.add_messages(again, IdempotencyRecord("batch-1", again[0].message.id, b"x"))
    for item in again:
        assert await store.get_message(item.message.id) is None
    assert await store.history("c@example.org", T0 - timedelta(days=1)) == []


async def test_list_deliveries_filters_and_paginates(store: Store) -> None:
    ids = []
    for i in range(5):
        _, (new,) = await add(
            store, recipients=(f"r{i}@example.org",), campaign="a" if i % 2 else "b"
        )
        ids.append(new.id)
    page = await store.list_deliveries(DeliveryQuery(limit=2))
    assert [d.id for d in page.deliveries] == ids[::-1][:2]
    page2 = await store.list_deliveries(DeliveryQuery(limit=2, after=page.next))
    page3 = await store.list_deliveries(DeliveryQuery(limit=2, after=page2.next))
    assert [d.id for d in [*page.deliveries, *page2.deliveries, *page3.deliveries]] == ids[::-1]
    assert page3.next is None
    only_a = await store.list_deliveries(DeliveryQuery(campaign="a"))
    assert {d.recipient for d in only_a.deliveries} == {"r1@example.org", "r3@example.org"}
    by_rcpt = await store.list_deliveries(DeliveryQuery(recipient="R2@example.org"))
    assert [d.id for d in by_rcpt.deliveries] == [ids[2]]
    held = await store.list_deliveries(DeliveryQuery(state=S.HELD))
    assert held.deliveries == []
    counts = await store.count_by_state()
    assert counts[S.QUEUED] == 5 and counts[S.SENT] == 0


async def test_lock_recipients_serialises_one_person(store: Store) -> None:
    order: list[str] = []

    async def critical(name: str, recipients: list[str]) -> None:
        async with store.lock_recipients(recipients):
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(
        critical("one", ["p@example.org", "q@example.org"]), critical("two", ["Q@example.org"])
    )
    assert order in (
        ["one in", "one out", "two in", "two out"],
        ["two in", "two out", "one in", "one out"],
    )


async def test_requirements_and_recipients_wake_delayed_deliveries(store: Store) -> None:
    later = T0 + timedelta(hours=5)
    _, (waiting,) = await add(store, S.DELAYED, recipients=("w@example.org",), due=later)
    _, (other,) = await add(store, S.DELAYED, recipients=("o@example.org",), due=later)
    assert await store.wake_waiting(T0, fact_key="unrelated:key") == 0
    assert await store.wake_waiting(T0, fact_key="meeting:1:status") == 2  # both require it
    assert [d.id for d in await store.claim_due(T0, "me", 10, LEASE)] == [waiting.id, other.id]
    await store.release([waiting.id, other.id], "me")

    _, (third,) = await add(store, S.DELAYED, recipients=("W@example.org",), due=later)
    assert await store.wake_waiting(T0, recipient="w@example.org") == 1
    delivery = await store.get_delivery(third.id)
    assert delivery is not None and delivery.due_at == T0


async def test_hold_origin_and_approval_are_kept(store: Store) -> None:
    _, (new,) = await add(store, S.HELD, due=None)
    held = await store.get_delivery(new.id)
    assert held is not None and held.hold_origin is None
    released = await store.change(
        new.id, Change(S.DELAYED, "approved by ana", T0, due_at=T0, approved_by="ana")
    )
    assert released.approved_by == "ana" and released.hold_origin is None
    paused = await store.change(new.id, Change(S.HELD, "campaign paused", T0, hold_origin="pause"))
    assert paused.hold_origin == "pause" and paused.approved_by == "ana"
    again = await store.change(new.id, Change(S.HELD, "policy", T0))
    assert again.hold_origin == "policy"


async def test_campaign_summaries(store: Store) -> None:
    await add(store, recipients=("a@example.org", "b@example.org"), campaign="spring")
    await add(store, S.HELD, due=None, campaign="spring")
    await add(store, campaign=None)
    await store.set_campaign(Campaign("winter", None, True, T0, "ana"))
    summaries = {s.campaign.name: s for s in await store.campaigns()}
    assert set(summaries) == {"spring", "winter"}
    assert summaries["spring"].counts[S.QUEUED] == 2
    assert summaries["spring"].counts[S.HELD] == 1
    assert summaries["winter"].campaign.paused
    assert sum(summaries["winter"].counts.values()) == 0


async def test_expired_idempotency_key_may_be_reused(store: Store) -> None:
    first = make_message()
    await store.add_message(first, b"x", [], IdempotencyRecord("k", first.id, b"1"))
    later = Message(**{**first.__dict__, "id": new_id(), "received_at": T0 + timedelta(days=2)})
    record = IdempotencyRecord("k", later.id, b"2", reusable_before=T0 + timedelta(days=1))
    await store.add_message(later, b"x", [], record)
    got = await store.idempotent_response("k", T0 + timedelta(days=1))
    assert got is not None and got.response == b"2"


async def test_prune_forgets_finished_work_and_keeps_what_waits(store: Store) -> None:
    old_sent, (sent,) = await add(store, recipients=("old@example.org",))
    await store.change(sent.id, Change(S.SENT, "ok", T0))
    _, (held,) = await add(store, S.HELD, recipients=("held@example.org",), due=None)
    await store.put_fact(Fact("k", "v", T0))
    await store.add_event(Event(EventType.OPEN, "old@example.org", T0))
    await store.add_audit(AuditEntry(T0, "ana", "approve", "campaign:x"))
    later = T0 + timedelta(days=100)
    fresh, (recent,) = await add(store, recipients=("new@example.org",))
    await store.change(recent.id, Change(S.SENT, "ok", later))

    assert await store.prune(T0 + timedelta(days=90)) == 1
    assert await store.get_delivery(sent.id) is None
    assert await store.get_message(old_sent.id) is None
    assert await store.transitions(sent.id) == []
    assert await store.history("old@example.org", T0 - timedelta(days=1)) == []
    assert await store.events("old@example.org") == []
    assert await store.get_fact("k") is None
    assert (await store.get_delivery(held.id)) is not None
    assert (await store.get_delivery(recent.id)) is not None
    assert await store.get_message(fresh.id) is not None
    assert len(await store.audit()) == 1
