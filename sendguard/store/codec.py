"""How backends turn model objects into column values and back (shared by every backend)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sendguard.duration import format_duration, parse_duration
from sendguard.headers import Headers
from sendguard.message import MessageClass, Requirement, SendguardFields
from sendguard.verdict import Action, Mode, PolicyOutcome, Verdict


def dump_headers(headers: Headers) -> str:
    """Headers as a JSON list of [name, value] pairs."""
    return json.dumps(headers.items, ensure_ascii=False)


def load_headers(text: str) -> Headers:
    """The inverse of `dump_headers`."""
    return Headers(tuple((str(k), str(v)) for k, v in json.loads(text)))


def dump_fields(fields: SendguardFields) -> str:
    """SendguardFields as a JSON object."""
    data: dict[str, Any] = {
        "campaign": fields.campaign,
        "class": fields.message_class.value,
        "requires": [[r.key, r.value] for r in fields.requires],
        "wait": format_duration(fields.wait) if fields.wait is not None else None,
        "data_as_of": fields.data_as_of.isoformat() if fields.data_as_of else None,
        "timezone": fields.timezone,
        "not_before": fields.not_before.isoformat() if fields.not_before else None,
    }
    return json.dumps(data, ensure_ascii=False)


def load_fields(text: str) -> SendguardFields:
    """The inverse of `dump_fields`."""
    data = json.loads(text)

    def when(key: str) -> datetime | None:
        value = data.get(key)
        return datetime.fromisoformat(value) if value else None

    return SendguardFields(
        campaign=data.get("campaign"),
        message_class=MessageClass(data.get("class", "marketing")),
        requires=tuple(Requirement(k, v) for k, v in data.get("requires", [])),
        wait=parse_duration(data["wait"]) if data.get("wait") else None,
        data_as_of=when("data_as_of"),
        timezone=data.get("timezone"),
        not_before=when("not_before"),
    )


def outcome_columns(outcome: PolicyOutcome) -> tuple[str, str, str, str, str | None]:
    """(policy, action, mode, reason, error) of an outcome; `until` is stored separately."""
    return (
        outcome.policy,
        outcome.verdict.action.value,
        outcome.mode.value,
        outcome.verdict.reason,
        outcome.error,
    )


def make_outcome(
    policy: str, action: str, mode: str, reason: str, until: datetime | None, error: str | None
) -> PolicyOutcome:
    """The inverse of `outcome_columns`."""
    return PolicyOutcome(
        policy=policy,
        verdict=Verdict(Action(action), reason, until if Action(action) is Action.DELAY else None),
        mode=Mode(mode),
        error=error,
    )
