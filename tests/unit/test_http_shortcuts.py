"""The HTTP send path's shortcuts answer as the longer ways they replace (session 13).

Each compares the shortcut with the code it stands in for over generated inputs: the single-line
checks, the `Date:` text of a second written before, a body quoted-printable leaves as it is,
and the field overrides kept for values seen before.
"""

from __future__ import annotations

import email.utils
import quopri
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sendguard import fields
from sendguard.errors import InvalidMessage
from sendguard.headers import format_date
from sendguard.ingress import payloads
from sendguard.ingress.api_send import _LINE_BREAKS, _UTF8_QP, _unencoded
from sendguard.ingress.payloads import (
    FORBIDDEN_IN_HEADERS,
    SendPayload,
    field_overrides,
    is_single_line,
    validate_as,
)

_TRICKY = st.sampled_from([*FORBIDDEN_IN_HEADERS, "\t", " ", "é", "\u00a0", "\u200b", "\x7f"])
_TEXTS = st.lists(st.characters() | _TRICKY, max_size=30).map("".join)


def test_every_forbidden_character_is_unprintable() -> None:
    # what lets printable text skip the search
    assert not any(c.isprintable() for c in FORBIDDEN_IN_HEADERS)
    assert not any(c.isprintable() for c in "\r\n\x00")


@settings(max_examples=200)
@given(_TEXTS)
def test_is_single_line_answers_as_the_search(value: str) -> None:
    assert is_single_line(value) == (not any(c in value for c in FORBIDDEN_IN_HEADERS))


@settings(max_examples=200)
@given(_TEXTS)
def test_the_fields_single_line_check_answers_as_the_search(value: str) -> None:
    refused = any(c in value for c in "\r\n\x00")
    if refused:
        with pytest.raises(ValueError, match="single line"):
            fields._single_line(value)
    else:
        assert fields._single_line(value) == value


_UTC_TIMES = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)).map(
    lambda at: at.replace(tzinfo=UTC)
)


@settings(max_examples=100)
@given(st.lists(_UTC_TIMES | st.datetimes(timezones=st.just(UTC)), max_size=8))
def test_format_date_of_the_same_second_again(times: list[datetime]) -> None:
    # The second written last is kept: each time, its neighbours in the same second, the
    # second before and after, in any order, get the email package's text.
    for at in times:
        for near in (at, at.replace(microsecond=0), at.replace(microsecond=999_999)):
            for other in (near, near + timedelta(seconds=1), near - timedelta(seconds=1), near):
                if datetime.min.replace(tzinfo=UTC) < other < datetime.max.replace(tzinfo=UTC):
                    assert format_date(other) == email.utils.format_datetime(other)


def test_format_date_keeps_only_utc_seconds() -> None:
    at = datetime(2026, 12, 3, 9, 30, 15, 500, tzinfo=UTC)
    assert format_date(at) == "Thu, 03 Dec 2026 09:30:15 +0000"
    # the same instant elsewhere is another text, however recently UTC was written
    berlin = at.astimezone(timezone(timedelta(hours=1)))
    assert format_date(berlin) == "Thu, 03 Dec 2026 10:30:15 +0100"
    assert format_date(at) == "Thu, 03 Dec 2026 09:30:15 +0000"
    assert format_date(datetime(1970, 1, 1, tzinfo=UTC)) == "Thu, 01 Jan 1970 00:00:00 +0000"


def _encoded(body: str) -> bytes:
    """What `_single_part` wrote for every body before the shortcut."""
    return _LINE_BREAKS.sub("\r\n", _UTF8_QP.body_encode(body)).encode()


_BODY = st.lists(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    | st.sampled_from(["\r\n", "\n", "\r", " \n", "\t\n", "=", "\t", "\x0b", "é", "\x85"])
    | st.sampled_from(["x" * 70, "y" * 76, "z" * 77]),
    min_size=1,
    max_size=40,
).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BODY)
@example("Hello, this week: new arrivals and ten percent off all of it.")
@example("a" * 76 + "\r\n" + "b" * 76 + "\n")
@example("ends with a blank \n")
@example("\n\n\r")
def test_a_body_left_as_it_is_is_what_quoted_printable_writes(body: str) -> None:
    plain = _unencoded(body)
    if plain is not None:
        assert plain == _encoded(body)
        assert quopri.decodestring(plain) == plain  # the fingerprint reads it as it is
    else:
        assert _encoded(body) != body.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def test_a_short_ascii_text_is_left_as_it_is() -> None:
    assert _unencoded("Hello,\nnew arrivals.") == b"Hello,\r\nnew arrivals."
    assert _unencoded("x = 1") is None
    assert _unencoded("x" * 77) is None
    assert _unencoded("trailing \n") is None
    assert _unencoded("caf\u00e9") is None


def _payload(**given: object) -> SendPayload:
    return validate_as(SendPayload, {"from": "a@example.com", "to": ["b@example.org"], **given})


def test_overrides_of_values_seen_before_are_those_made_anew() -> None:
    payload = _payload(campaign="spring", requires=["a=b"], wait="24h")
    first = field_overrides(payload)
    again = field_overrides(_payload(campaign="spring", requires=["a=b"], wait="24h"))
    assert again is first  # kept
    fresh = fields.overrides_from({"campaign": "spring", "requires": ["a=b"], "wait": "24h"})
    assert again == fresh
    assert field_overrides(_payload(campaign="summer")).values.campaign == "summer"
    # an explicit null is a value of its own (not given, as before)
    assert field_overrides(_payload(campaign=None)) == fields.overrides_from({"campaign": None})


def test_refused_overrides_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(InvalidMessage, match="wait"):
            field_overrides(_payload(wait="soon"))
    assert ("wait", "soon") not in {item for key in payloads._recent_overrides for item in key}


def test_the_kept_overrides_are_bounded() -> None:
    for n in range(payloads._RECENT_OVERRIDES + 50):
        field_overrides(_payload(campaign=f"c{n}"))
    assert len(payloads._recent_overrides) <= payloads._RECENT_OVERRIDES


def test_values_that_are_no_key_are_parsed_each_time() -> None:
    assert payloads._overrides_key({"a": 1}) is None
    assert payloads._overrides_key({"a": [True]}) is None
    assert payloads._overrides_key({"a": ["x"], "b": None, "c": "y"}) == (
        ("a", ("x",)),
        ("b", None),
        ("c", "y"),
    )
