"""Schemathesis hooks for tests/e2e/test_openapi_schemathesis.py (loaded by its config).

Three rules of the API are stated in the document's words but cannot be said in JSON Schema:
a time something was observed or happened (`at`, `observed_at`) may not lie in the future, a
fact cannot supersede itself, and a duration (`wait`) is at most 3650d. Requests are kept inside
those rules just before they are sent, by moving such a time into the past, dropping such a
`superseded_by` and shortening such a duration: the request stays valid per the schema, and
every other part of it is tested as generated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import schemathesis

from sendguard.duration import parse_duration

PAST_TIMES = frozenset({"at", "observed_at"})
A_PAST_TIME = "2020-01-01T00:00:00Z"
# Only a well-formed RFC 3339 date-time is moved: a malformed one stays, to be refused.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", re.ASCII)


def _in_future(value: Any) -> bool:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return False
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment > datetime.now(UTC)
    except OverflowError:
        return True


DURATIONS = frozenset({"wait"})
A_DURATION = "1d"


def _too_long(value: Any) -> bool:
    """A duration the schema's pattern allows but the server refuses as over 3650d."""
    if not isinstance(value, str):
        return False
    try:
        parse_duration(value)
    except ValueError as exc:
        return "longer than the maximum" in str(exc)
    return False


def into_the_rules(body: Any) -> Any:
    """`body` with future past-times moved back and self-supersession dropped."""
    if isinstance(body, list):
        return [into_the_rules(item) for item in body]
    if not isinstance(body, dict):
        return body
    out = {
        key: A_PAST_TIME if key in PAST_TIMES and _in_future(value) else value
        for key, value in body.items()
    }
    for key in DURATIONS & out.keys():
        if _too_long(out[key]):
            out[key] = A_DURATION
    if "key" in out and out.get("superseded_by") == out["key"]:
        del out["superseded_by"]
    return out


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # Before every call, in every phase (map_body would miss the coverage phase).
    if isinstance(case.body, dict | list):
        case.body = into_the_rules(case.body)
