"""A held stored-template message cannot be edited: its content is the ESP's template, and an
edited copy would leave rendered without it (docs/esp-compat.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sendguard.deliveries import NewDelivery
from sendguard.esp_request import EspRequest
from sendguard.ids import new_id
from sendguard.message import DeliveryState
from sendguard.review_page.editing import Editable, EditRefused, edit_campaign
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Verdict
from tests.contract.test_store import T0, decision, make_message

CONTENT = b"Subject: \r\n\r\nSendGrid stored template d-launch, with:\r\n{}\r\n"


async def _held(store: SQLiteStore, request: EspRequest | None) -> str:
    message = dataclasses.replace(make_message(campaign="launch"), ingress="sendgrid")
    held = NewDelivery(
        new_id(), "a@example.org", DeliveryState.HELD, "unapproved", decision(Verdict.forward()), T0
    )
    await store.add_message(message, CONTENT, [held], esp_request=request)
    return message.id


async def test_a_template_message_is_refused_and_a_plain_one_edited(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "edit.db")
    await store.open()
    try:
        templated = await _held(store, EspRequest("sendgrid", b"{}", "d-launch"))
        plain = await _held(store, EspRequest("sendgrid", b"{}"))
        after = Editable("Better subject", "SendGrid stored template d-launch, with:\n{}\n", None)
        with pytest.raises(EditRefused, match="stored template 'd-launch'"):
            await edit_campaign(store, FakeClock(T0), "launch", templated, after, "ana")
        # A plain ESP message of the same text is edited; the template one is left alone.
        outcome = await edit_campaign(store, FakeClock(T0), "launch", plain, after, "ana")
        assert outcome.moved == 1 and outcome.unmatched == 1
        (delivery,) = await store.deliveries_of(templated)
        assert delivery.state is DeliveryState.HELD
    finally:
        await store.close()
