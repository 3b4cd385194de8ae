"""The JSON send's mailboxes: what the OpenAPI pattern matches, the handler takes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendguard.ingress.mailboxes import mailbox_address
from sendguard.ingress.payloads import MAILBOX_PATTERN, BadRequest


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(MAILBOX_PATTERN, fullmatch=True))
def test_every_mailbox_the_pattern_matches_is_taken(value: str) -> None:
    address = mailbox_address(value, "from")
    assert value.endswith(f"<{address}>")


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("Shop <shop@example.com>", "shop@example.com"),
        ('"Doe, Ann" <ann@example.org>', "ann@example.org"),
        ("J. Smith <js@example.org>", "js@example.org"),
        ("J\u00fcrgen <j@example.org>", "j@example.org"),
        ("<ann@example.org>", "ann@example.org"),
        ("ann@example.org", "ann@example.org"),
    ],
)
def test_mailboxes_give_their_address(value: str, address: str) -> None:
    assert mailbox_address(value, "to[0]") == address


@pytest.mark.parametrize(
    "value",
    [
        "Doe, Ann <ann@example.org>",
        "Ann <ann@example.org",
        "Ann <bad address@example.org>",
        "Ann <ann@example.org> <bob@example.org>",
        "Ann\r\nBcc: x@example.org <ann@example.org>",
        "Ann <ann@localhost>",
        "<>",
        "",
    ],
)
def test_what_is_not_one_mailbox_is_a_bad_request_naming_the_field(value: str) -> None:
    with pytest.raises(BadRequest) as raised:
        mailbox_address(value, "from")
    assert raised.value.field == "from"
    assert not re.fullmatch(MAILBOX_PATTERN, value)
