"""What the ESP-compatible routes turn into MIME: a line break never reaches a header."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sendguard.ingress.esp import sendgrid
from sendguard.ingress.esp.mapping import EspError, Outgoing, render

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize("brk", ["\r\n", "\n", "\x0c", "\x0b", "\u2028", "\x00"])
def test_a_line_break_in_a_name_is_a_400_naming_it(brk: str) -> None:
    # Found by schemathesis: SendGrid `to[].name` with a line break answered 500.
    body = {
        "from": {"email": "a@example.com"},
        "subject": "s",
        "personalizations": [{"to": [{"email": "b@example.org", "name": f"B{brk}Bcc: x"}]}],
        "content": [{"type": "text/plain", "value": "hi"}],
    }
    (out,) = sendgrid.parse(body)
    with pytest.raises(EspError, match="to: must be a single line") as raised:
        render(out, NOW)
    assert raised.value.status == 400


def test_a_field_cannot_inject_a_header_before_a_raw_message() -> None:
    # A Mailgun messages.mime send puts the sendguard fields before the message as given.
    out = Outgoing(
        sender="a@example.com",
        to=(),
        bcc=("b@example.org",),
        raw=b"From: a@example.com\r\n\r\nhi\r\n",
        fields=(("X-Sendguard-Campaign", "c\r\nBcc: evil@example.net", "v:sendguard_campaign"),),
    )
    with pytest.raises(EspError, match="v:sendguard_campaign: must be a single line"):
        render(out, NOW)


def test_a_category_must_be_a_string() -> None:
    body = {
        "from": {"email": "a@example.com"},
        "subject": "s",
        "personalizations": [{"to": [{"email": "b@example.org"}]}],
        "content": [{"type": "text/plain", "value": "hi"}],
        "categories": [{}],
    }
    with pytest.raises(EspError, match=r"categories\[0\] must be a string"):
        sendgrid.parse(body)
