"""What the relay keeps per message and per Idempotency-Key (issue 10), on every backend."""

from __future__ import annotations

import dataclasses

from sendguard.deliveries import IdempotencyRecord, NewDelivery
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.store.base import Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message


async def test_smtputf8_and_8bitmime_are_kept_with_the_message(store: Store) -> None:
    message = dataclasses.replace(make_message(), smtputf8=True, body_8bit=True)
    plain = make_message()
    news = [
        NewDelivery(
            new_id(), "a@example.org", DeliveryState.QUEUED, "ok", decision(Verdict.forward()), T0
        )
    ]
    await store.add_message(message, b"x", news)
    await store.add_message(plain, b"x", [])
    got = await store.get_message(message.id)
    assert got is not None and (got.smtputf8, got.body_8bit) == (True, True)
    (delivery,) = await store.deliveries_of(message.id)
    assert (delivery.message.smtputf8, delivery.message.body_8bit) == (True, True)
    other = await store.get_message(plain.id)
    assert other is not None and (other.smtputf8, other.body_8bit) == (False, False)


async def test_idempotency_fingerprint_is_kept(store: Store) -> None:
    message = make_message()
    record = IdempotencyRecord("fp", message.id, b"{}", fingerprint="sha256:abc")
    await store.add_message(message, b"x", [], record)
    got = await store.idempotent_response("fp", T0)
    assert got is not None and got.fingerprint == "sha256:abc"
