"""Bounded durations and the headers that never leave (issue 10)."""

from __future__ import annotations

import pytest

from sendguard.duration import MAX_DURATION, parse_duration
from sendguard.headers import strip_unforwarded_headers


@pytest.mark.parametrize("text", ["99999999999d", "3651d", "9" * 400 + "w", "87601h"])
def test_durations_past_the_maximum_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="maximum of 3650d"):
        parse_duration(text)


def test_the_maximum_itself_is_accepted() -> None:
    assert parse_duration("3650d") == MAX_DURATION


def test_bcc_and_sendguard_headers_are_stripped_with_their_continuations() -> None:
    raw = (
        b"From: a@example.com\r\nBcc: x@example.org,\r\n y@example.org\r\n"
        b"RESENT-BCC : z@example.org\r\nX-Sendguard-Campaign: c\r\nBcc-Note: kept\r\n"
        b"Subject: s\r\n\r\nBcc: in the body stays\r\n"
    )
    assert strip_unforwarded_headers(raw) == (
        b"From: a@example.com\r\nBcc-Note: kept\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n"
    )


def test_a_message_without_such_headers_is_returned_as_it_came() -> None:
    raw = b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    assert strip_unforwarded_headers(raw) is raw
