"""The seams that used to pass strings around carry enums and typed records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sendguard.config import parse_config
from sendguard.fields import FieldOverrides
from sendguard.message import DeliveryState, HoldExpiry, SendguardFields
from sendguard.review import APPROVE, CAMPAIGN_ACTIONS, PAUSE, REJECT, RESUME
from sendguard.verdict import OnError


def test_on_error_and_on_hold_expiry_are_enums_from_the_config() -> None:
    settings = parse_config(
        "policies: [{plugin: schedule, on_error: forward}]\nreview: {on_hold_expiry: forward}\n",
        "test",
    )
    assert settings.policies[0].config.on_error is OnError.FORWARD
    assert settings.config.review.on_hold_expiry is HoldExpiry.FORWARD


def test_overrides_replace_only_what_is_given() -> None:
    read = SendguardFields(campaign="from-header", offer="o-1")
    when = datetime(2026, 1, 2, tzinfo=UTC)
    overrides = FieldOverrides(
        SendguardFields(campaign="from-json", not_before=when),
        frozenset({"campaign", "not_before"}),
    )
    assert overrides.apply(read) == SendguardFields(
        campaign="from-json", offer="o-1", not_before=when
    )
    assert FieldOverrides().apply(read) is read


def test_overrides_name_only_real_fields() -> None:
    with pytest.raises(ValueError, match="not sendguard fields: campagin"):
        FieldOverrides(SendguardFields(), frozenset({"campagin"}))


def test_campaign_actions_form_one_table() -> None:
    assert list(CAMPAIGN_ACTIONS) == ["approve", "reject", "pause", "resume"]
    assert (APPROVE.to, REJECT.to, PAUSE.to, RESUME.to) == (
        DeliveryState.DELAYED,
        DeliveryState.DROPPED,
        DeliveryState.HELD,
        DeliveryState.DELAYED,
    )
    assert PAUSE.paused is True and RESUME.paused is False and APPROVE.records_content
