"""Facts and what waits on them, on every store backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sendguard.deliveries import Change, NewDelivery
from sendguard.facts import Fact
from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import (
    DeliveryState,
    Match,
    Message,
    OnTimeout,
    Requirement,
    SendguardFields,
)
from sendguard.store.base import Store
from sendguard.verdict import Decision, Mode, PolicyOutcome, Verdict

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=5)
S = DeliveryState


async def add(
    store: Store, recipient: str, verdict: Verdict, fields: SendguardFields | None = None
) -> str:
    message = Message(
        id=new_id(),
        received_at=T0,
        ingress="smtp",
        mail_from="shop@example.com",
        recipients=(recipient,),
        headers=Headers((("Subject", "Hi"),)),
        fields=fields or SendguardFields(),
    )
    state = {"delay": S.DELAYED, "hold": S.HELD}[verdict.action.value]
    ident = new_id()
    new = NewDelivery(
        ident,
        recipient,
        state,
        verdict.reason,
        Decision.of([PolicyOutcome("context", verdict)]),
        verdict.until,
        "policy" if state is S.HELD else None,
    )
    await store.add_message(message, b"x", [new])
    return ident


async def test_contacts_are_recipient_keys(store: Store) -> None:
    await store.put_fact(Fact("deal:1:stage", "won", T0, contact="Paula@Prospect.Example"))
    got = await store.get_fact("deal:1:stage", "paula@prospect.example")
    assert got is not None and got.value == "won" and got.contact == "paula@prospect.example"
    same = await store.get_fact("deal:1:stage", "PAULA@prospect.example")
    assert same == got
    await store.put_fact(
        Fact("deal:1:stage", "lost", T0 + timedelta(1), contact="paula@PROSPECT.example")
    )
    again = await store.get_fact("deal:1:stage", "Paula@Prospect.Example")
    assert again is not None and again.value == "lost"
    assert await store.get_fact("deal:1:stage") is None


async def test_a_fact_keeps_its_successor(store: Store) -> None:
    await store.put_fact(
        Fact("meeting:8812:status", "rescheduled", T0, superseded_by="meeting:8830")
    )
    got = await store.get_fact("meeting:8812:status")
    assert got is not None and got.superseded_by == "meeting:8830"
    assert got.successor == "meeting:8830:status"
    await store.put_fact(Fact("meeting:8812:status", "completed", T0 + timedelta(1)))
    plain = await store.get_fact("meeting:8812:status")
    assert plain is not None and plain.superseded_by is None and plain.successor is None
    assert Fact("a:b", "v", T0, superseded_by="c:d:e").successor == "c:d:e"


async def test_premises_survive_the_round_trip(store: Store) -> None:
    fields = SendguardFields(
        requires=(Requirement("m:1:status", "a|b", Match.ONE_OF, T0),),
        unless=(Requirement("m:2:status", "no_show", Match.NOT_EQUAL),),
        on_timeout=OnTimeout.FORWARD,
    )
    ident = await add(store, "a@example.org", Verdict.delay(LATER, "later"), fields)
    delivery = await store.get_delivery(ident)
    assert delivery is not None and delivery.message.fields == fields


async def test_facts_wake_what_waits_on_them_delayed_and_held(store: Store) -> None:
    unless = SendguardFields(unless=(Requirement("m:9:status", "no_show"),))
    by_header = await add(store, "h@example.org", Verdict.delay(LATER, "later"), unless)
    delayed = await add(store, "d@example.org", Verdict.delay(LATER, "later", ("k:1",)))
    held = await add(store, "held@example.org", Verdict.hold("waited", ("k:1",)))
    other = await add(store, "o@example.org", Verdict.hold("waited", ("k:1",)))
    paused = await add(store, "p@example.org", Verdict.hold("waited", ("k:1",)))
    # Held for review by another policy while this one waits: the fact does not wake it.
    reviewed = await add(store, "r@example.org", Verdict.hold("review"))
    both = Decision.of(
        [
            PolicyOutcome("context", Verdict.delay(LATER, "later", ("k:1",))),
            PolicyOutcome("human_hold", Verdict.hold("review")),
        ]
    )
    await store.change(reviewed, Change(S.HELD, "review", T0, decision=both))
    await store.change(paused, Change(S.HELD, "campaign paused", T0, hold_origin="pause"))

    assert await store.wake_waiting(T0, fact_key="m:9:status") == 1
    woken = await store.get_delivery(by_header)
    assert woken is not None and woken.due_at == T0

    assert await store.wake_waiting(T0, fact_key="k:1", contact="HELD@example.org") == 1
    moved = await store.get_delivery(held)
    assert moved is not None and moved.state is S.DELAYED and moved.due_at == T0
    assert (await store.transitions(held))[-1].reason == "fact k:1 arrived; judged again"
    still = await store.get_delivery(delayed)
    assert still is not None and still.due_at == LATER

    assert await store.wake_waiting(T0, fact_key="k:1") == 2  # the delayed one and `other`
    for ident, state in (
        (delayed, S.DELAYED),
        (other, S.DELAYED),
        (paused, S.HELD),
        (reviewed, S.HELD),
    ):
        got = await store.get_delivery(ident)
        assert got is not None and got.state is state


async def test_a_new_decision_replaces_what_a_delivery_waits_on(store: Store) -> None:
    ident = await add(store, "a@example.org", Verdict.delay(LATER, "later", ("k:1",)))
    shadow = PolicyOutcome("x", Verdict.delay(LATER, "shadow", ("k:3",)), Mode.SHADOW)
    again = Decision.of([PolicyOutcome("context", Verdict.delay(LATER, "later", ("k:2",))), shadow])
    await store.change(ident, Change(S.DELAYED, "later", T0, due_at=LATER, decision=again))
    assert await store.wake_waiting(T0, fact_key="k:1") == 0
    assert await store.wake_waiting(T0, fact_key="k:3") == 0
    assert await store.wake_waiting(T0, fact_key="k:2") == 1


async def test_an_override_is_kept(store: Store) -> None:
    ident = await add(store, "a@example.org", Verdict.hold("waited", ("k:1",)))
    changed = await store.change(
        ident,
        Change(S.DELAYED, "override by ana", T0, due_at=T0, approved_by="ana", override_by="ana"),
    )
    assert changed.override_by == "ana" and changed.approved_by == "ana"
    again = await store.change(ident, Change(S.HELD, "held", T0))
    assert again.override_by == "ana"
