"""The ESP request a message came in as (pass-through): kept with it, pruned with it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sendguard.deliveries import Change, NewDelivery
from sendguard.esp_request import EspRequest
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.store.base import Store
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message

BODY = '{"template_id": "d-1", "personalizations": [{"to": [{"email": "zoë@example.org"}]}]}'


async def test_the_request_is_kept_with_its_message_and_pruned_with_it(store: Store) -> None:
    message = dataclasses.replace(make_message(("zoë@example.org",)), ingress="sendgrid")
    plain = make_message()
    new = NewDelivery(
        new_id(), "zoë@example.org", DeliveryState.QUEUED, "ok", decision(Verdict.forward()), T0
    )
    request = EspRequest("sendgrid", BODY.encode(), "d-1")
    await store.add_message(message, b"x", [new], esp_request=request)
    await store.add_message(plain, b"x", [])
    assert await store.esp_request(message.id) == request
    assert await store.esp_request(plain.id) is None
    assert await store.esp_request("no-such-message") is None

    await store.change(new.id, Change(DeliveryState.SENT, "upstream accepted", T0))
    assert await store.prune(T0 - timedelta(days=1)) == 0
    assert await store.esp_request(message.id) == request  # kept while its message is
    await store.prune(T0 + timedelta(days=1))
    assert await store.get_message(message.id) is None
    assert await store.esp_request(message.id) is None


async def test_a_request_without_a_template_is_kept_too(store: Store) -> None:
    message = dataclasses.replace(make_message(), ingress="postmark")
    request = EspRequest("postmark", b'{"To": "a@example.org", "TextBody": "x"}')
    await store.add_message(message, b"x", [], esp_request=request)
    got = await store.esp_request(message.id)
    assert got is not None and got.template is None and got.body == request.body
