"""`field_overrides` reads only the fields a send payload set: the same overrides as all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sendguard.errors import InvalidMessage
from sendguard.fields import FIELDS, FieldOverrides, overrides_from
from sendguard.ingress.payloads import SendPayload, field_overrides, validate_as

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "campaign": st.sampled_from([None, "spring", "news-letter"]),
    "class": st.sampled_from([None, "transactional", "Marketing"]),
    "requires": st.sampled_from([[], ["a=b"], ["plan in gold|silver", "x!=y"]]),
    "wait": st.sampled_from([None, "24h", "90s"]),
    "data_as_of": st.sampled_from([None, "2026-11-22T09:00:00Z"]),
    "timezone": st.sampled_from([None, "Europe/Berlin"]),
    "not_before": st.sampled_from([None, "2026-11-22T09:00:00+01:00"]),
    "offer": st.sampled_from([None, "spring-sale"]),
    "unless": st.sampled_from([[], ["bought=yes"]]),
    "on_timeout": st.sampled_from([None, "hold", "DROP"]),
}


def outcome(read: Callable[[SendPayload], FieldOverrides], payload: SendPayload) -> Any:
    try:
        return read(payload)
    except InvalidMessage as exc:
        return str(exc), exc.field


def every_field(payload: SendPayload) -> FieldOverrides:
    """What field_overrides answered when it read every field of the payload."""
    return overrides_from({spec.json_name: getattr(payload, spec.name) for spec in FIELDS})


@settings(deadline=None)
@given(st.fixed_dictionaries({}, optional=VALUES))
def test_overrides_of_the_set_fields_are_those_of_every_field(fields: dict[str, Any]) -> None:
    payload = validate_as(SendPayload, {"from": "a@example.com", "to": ["b@example.org"], **fields})
    assert outcome(field_overrides, payload) == outcome(every_field, payload)


def test_every_payload_field_is_known() -> None:
    assert {spec.json_name for spec in FIELDS} == set(VALUES)
