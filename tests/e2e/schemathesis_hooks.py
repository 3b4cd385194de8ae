"""Schemathesis hooks for tests/e2e/test_openapi_schemathesis.py (loaded by its config).

Two rules of the API are stated in the document's words but cannot be said in JSON Schema:
a time something was observed or happened (`at`, `observed_at`) may not lie in the future,
and a fact cannot supersede itself. Requests are kept inside those rules just before they are
sent, by moving such a time into the past and dropping such a `superseded_by`: the request
stays valid per the schema, and every other part of it is tested as generated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import schemathesis

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
    if "key" in out and out.get("superseded_by") == out["key"]:
        del out["superseded_by"]
    return out


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # Before every call, in every phase (map_body would miss the coverage phase).
    if isinstance(case.body, dict | list):
        case.body = into_the_rules(case.body)
