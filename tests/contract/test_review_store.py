"""The store's review queue, edits before approval and reviewer notices, on every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sendguard.approvals import Campaign
from sendguard.deliveries import Change, NewDelivery
from sendguard.errors import Conflict
from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.pruning import PruneCutoffs
from sendguard.review_queue import Edit, EditedPart, HeldQuery
from sendguard.store.base import Store
from sendguard.verdict import Decision, PolicyOutcome, Verdict
from tests.contract.test_store import LEASE, T0, add, make_message

S = DeliveryState


async def held(
    store: Store, campaign: str | None, recipients: tuple[str, ...], policy: str = "human_hold"
) -> list[str]:
    message = make_message(recipients, campaign)
    news = [
        NewDelivery(
            new_id(),
            r,
            S.HELD,
            "held",
            Decision.of(
                [
                    PolicyOutcome("schedule", Verdict.forward()),
                    PolicyOutcome(policy, Verdict.hold("review")),
                ]
            ),
            T0 + timedelta(days=7),
            hold_origin="policy",
        )
        for r in recipients
    ]
    await store.add_message(message, b"Subject: Hi\r\n\r\nbody\r\n", news)
    return [n.id for n in news]


async def test_the_held_queue_is_grouped_paged_and_filtered_in_the_store(store: Store) -> None:
    await held(store, "b-sale", ("a@example.org", "b@example.org"))
    late = await held(store, "a-news", ("c@example.org",), policy="context")
    await held(store, None, ("d@example.org",))
    await add(store, S.QUEUED, ("e@example.org",), campaign="b-sale")  # not held: not listed

    queue = await store.held_queue(HeldQuery(limit=3))
    assert [(g.campaign, g.count) for g in queue.groups] == [
        ("a-news", 1),
        ("b-sale", 2),
        (None, 1),
    ]
    assert queue.total == 4
    assert queue.groups[0].expires == T0 + timedelta(days=7) and queue.groups[0].oldest == T0
    # Queue order: campaigns by name, no campaign last; the page is the first three.
    assert [d.campaign for d in queue.deliveries] == ["a-news", "b-sale", "b-sale"]
    rest = await store.held_queue(HeldQuery(offset=3, limit=3))
    assert [d.campaign for d in rest.deliveries] == [None] and rest.total == 4

    by_policy = await store.held_queue(HeldQuery(policy="context"))
    assert [d.id for d in by_policy.deliveries] == late and by_policy.total == 1
    by_person = await store.held_queue(HeldQuery(recipient="B@Example.org"))
    assert [d.recipient for d in by_person.deliveries] == ["b@example.org"]
    assert (await store.held_queue(HeldQuery(campaign="b-sale", limit=0))).total == 2
    await store.set_campaign(Campaign("z-paused", paused=True, updated_at=T0, updated_by="ana"))
    assert [c.name for c in (await store.held_queue(HeldQuery())).reviewed] == ["z-paused"]

    # A later decision that no longer holds for that policy takes it out of the filter.
    await store.change(
        late[0],
        Change(
            S.HELD,
            "held again",
            T0 + timedelta(minutes=1),
            decision=Decision.of([PolicyOutcome("human_hold", Verdict.hold("review"))]),
        ),
    )
    assert (await store.held_queue(HeldQuery(policy="context"))).total == 0
    assert (await store.held_queue(HeldQuery(policy="human_hold"))).total == 4


async def test_an_edit_moves_the_held_deliveries_to_a_copy_and_keeps_the_original(
    store: Store,
) -> None:
    message, news = await add(
        store, S.HELD, ("a@example.org", "b@example.org", "c@example.org"), campaign="spring"
    )
    sent, held_ids = news[0].id, [n.id for n in news[1:]]
    await store.change(sent, Change(S.DROPPED, "rejected", T0, expect=frozenset({S.HELD})))
    copy = replace(
        message,
        id=new_id(),
        headers=Headers((("Subject", "Hello"),)),
        size=22,
        content_hash="edited-hash",
    )
    edit = Edit(
        new_id(),
        "spring",
        message.id,
        copy.id,
        message.id,
        "ana",
        T0 + timedelta(minutes=5),
        (EditedPart.SUBJECT,),
        "-Hi\n+Hello",
        "typo",
    )
    done = await store.add_edit(edit, copy, b"Subject: Hello\r\n\r\nbody\r\n")
    assert done.count == 2

    # The original is kept as it was; the held deliveries carry the copy.
    assert await store.message_content(message.id) == b"Subject: Hi\r\n\r\nbody\r\n"
    assert await store.message_content(copy.id) == b"Subject: Hello\r\n\r\nbody\r\n"
    for ident in held_ids:
        moved = await store.get_delivery(ident)
        assert moved is not None and moved.message.id == copy.id
        assert moved.message.subject == "Hello" and moved.message.content_hash == "edited-hash"
        assert moved.message.fields == message.fields  # the campaign, premises, class stay
    dropped = await store.get_delivery(sent)
    assert dropped is not None and dropped.message.id == message.id
    # The sender's view of its message still lists every delivery.
    assert sorted(d.id for d in await store.deliveries_of(message.id)) == sorted(n.id for n in news)
    assert await store.edits("spring") == [done]
    assert await store.edit_making(copy.id) == done
    assert await store.edit_making(message.id) is None
    assert await store.audit(10) == []  # the caller audits the whole action

    # Nothing held any more: the edit is refused and nothing is written.
    again = replace(edit, id=new_id(), edited_message_id=new_id())
    with pytest.raises(Conflict):
        await store.add_edit(again, replace(copy, id=again.edited_message_id), b"x")
    assert await store.get_message(again.edited_message_id) is None
    assert len(await store.edits("spring")) == 1


async def test_an_edit_leaves_a_claimed_delivery_and_the_original_outlives_pruning(
    store: Store,
) -> None:
    message, news = await add(store, S.HELD, ("a@example.org", "b@example.org"), due=T0)
    claimed = await store.claim_due(T0, "worker", 1, LEASE)
    assert len(claimed) == 1
    copy = replace(message, id=new_id())
    edit = Edit(
        new_id(),
        "spring",
        message.id,
        copy.id,
        message.id,
        "ana",
        T0,
        (EditedPart.TEXT,),
        "",
    )
    done = await store.add_edit(edit, copy, b"Subject: Hi\r\n\r\nfixed\r\n")
    assert done.count == 1
    left = await store.get_delivery(claimed[0].id)
    assert left is not None and left.message.id == message.id
    # Once the delivery still on the original is gone, the original stays while its
    # edited copy has deliveries.
    await store.change(claimed[0].id, Change(S.DROPPED, "rejected", T0))
    await store.prune(PruneCutoffs.uniform(T0 + timedelta(days=1)))
    assert await store.get_message(message.id) is not None
    assert len(news) == 2


async def test_notices_announce_a_first_hold_once_until_it_is_all_reviewed(store: Store) -> None:
    assert await store.notice_held(["spring", None], T0) == ["spring", None]
    assert await store.notice_held(["spring", None, "autumn"], T0) == ["autumn"]
    await store.notice_sent("spring", T0 + timedelta(seconds=1))
    notices = {n.campaign: n for n in await store.review_notices()}
    assert set(notices) == {"spring", None, "autumn"}
    assert notices["spring"].sent_at == T0 + timedelta(seconds=1)
    assert notices[None].sent_at is None
    await store.forget_notices(["autumn"])
    assert [n.campaign for n in await store.review_notices()] == ["autumn"]
    assert await store.notice_held(["spring"], T0) == ["spring"]
    await store.forget_notices([])
    assert await store.review_notices() == []
