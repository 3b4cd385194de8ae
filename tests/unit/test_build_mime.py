from __future__ import annotations

import email
import email.generator
import email.policy
import email.utils
from datetime import UTC, datetime
from unittest.mock import patch

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sendguard.content import fingerprints
from sendguard.headers import Headers, header_end, stamp, strip_unforwarded_headers
from sendguard.ingress.api_send import (
    _FOLD_AT,
    _GENERATED,
    _plain_value,
    _single_part,
    build_mime,
    build_mime_objects,
)
from sendguard.ingress.payloads import SendPayload

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_text_and_html_with_non_ascii_headers() -> None:
    payload = SendPayload.model_validate(
        {
            "from": "shop@example.com",
            "to": ["a@example.org"],
            "cc": ["c@example.org"],
            "bcc": ["secret@example.org"],
            "subject": "Grüße aus Köln",
            "text": "Hallo Ünal " * 20,
            "html": "<p>Hallo</p>",
            "headers": {"X-Note": "Ärger", "Subject": "ignored?"},
        }
    )
    raw = build_mime(payload, NOW)
    assert b"secret@example.org" not in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = parse(raw)
    assert message["Subject"] == "ignored?"  # payload headers win over the generated ones
    assert message["X-Note"] == "Ärger"
    assert message["Cc"] == "c@example.org"
    text, html = message.iter_parts()
    assert text.get_content() == "Hallo Ünal " * 20
    assert html.get_content_type() == "text/html"


def test_html_only_and_empty_body() -> None:
    html = build_mime(
        SendPayload.model_validate(
            {"from": "s@example.com", "to": ["a@example.org"], "html": "<b>x</b>"}
        ),
        NOW,
    )
    assert parse(html).get_content_type() == "text/html"
    empty = build_mime(
        SendPayload.model_validate(
            {"from": "s@example.com", "to": ["a@example.org"], "subject": "plain"}
        ),
        NOW,
    )
    assert parse(empty).get_content_type() == "text/plain"
    assert parse(empty)["Subject"] == "plain"


# The common message is written directly (`_single_part`); its bytes must be the email
# package's, byte for byte, and every other message must still take the package's path.
_HEADER_TEXT = st.lists(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["é", "\t", "  "]),
    max_size=90,
).map("".join)
_BODY = st.lists(
    st.characters(blacklist_categories=("Cs",))
    | st.sampled_from(
        [
            "\r\n",
            "\n",
            "\r",
            " \n",
            "=",
            ".",
            "\u2028",
            "\x85",
            "From ",
            "<b>",
            "&eacute;",
            "Hi Ann\n",
        ]
    ),
    max_size=300,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_HEADER_TEXT,
    text=st.none() | _BODY,
    html=st.none() | _BODY,
    to=st.lists(st.sampled_from(["a@example.org", "bob.b@example.com"]), max_size=3),
    cc=st.lists(st.just("c@example.org"), max_size=2),
    extra=st.dictionaries(
        st.sampled_from(
            ["X-Note", "X-Long-Header-Name", "Reply-To", "subject", "Message-ID", "X-Sendguard-Tag"]
        ),
        _HEADER_TEXT,
        max_size=2,
    ),
    sender=st.sampled_from(["s@example.com", "someone.with.a.long.name@sub.example.co.uk"]),
)
def test_the_direct_path_writes_what_the_email_package_writes(
    subject: str,
    text: str | None,
    html: str | None,
    to: list[str],
    cc: list[str],
    extra: dict[str, str],
    sender: str,
) -> None:
    payload = SendPayload.model_construct(
        from_=sender,
        to=to or ["a@example.org"],
        cc=cc,
        bcc=[],
        subject=subject,
        text=text,
        html=html,
        headers=extra,
    )
    with (
        patch.object(email.utils, "make_msgid", lambda domain=None: f"<fixed@{domain}>"),
        patch.object(email.generator.random, "randrange", lambda _: 7),  # MIME boundaries
    ):
        direct = _single_part(payload, NOW)
        objects = build_mime_objects(payload, NOW)
        assert build_mime(payload, NOW) == objects
    event("written directly" if direct is not None else "by the email package")
    if direct is not None:
        assert direct.raw == objects
        # The fingerprint it gives is the one the intake would take from the bytes.
        assert direct.fingerprint == fingerprints(strip_unforwarded_headers(objects))
        # So are the headers it gives (none where a value holds an encoded word's `=?`).
        event("headers given" if direct.headers is not None else "headers parsed")
        if direct.headers is not None:
            assert direct.headers == Headers.parse(objects[: header_end(objects)])
            # and the intake's stamp, told them, writes what it writes when it reads them
            content = strip_unforwarded_headers(direct.raw)
            received = "from HTTP client ([::1])\r\n\tby h (sendguard) with HTTP id 1;\r\n\tD"
            told = stamp(content, received, "D2", "<i@h>", direct.headers)
            assert told == stamp(content, received, "D2", "<i@h>")
        else:
            assert any("=?" in value for value in [subject, *extra.values()])


def test_the_direct_path_takes_the_common_message() -> None:
    payload = SendPayload.model_validate(
        {
            "from": "news@example.com",
            "to": ["a@example.org"],
            "subject": "This week",
            "text": "Hello = there,\nnew arrivals.  \n" + "x" * 100,
            "headers": {"X-Campaign-Note": "spring"},
        }
    )
    with patch.object(email.utils, "make_msgid", lambda domain=None: f"<fixed@{domain}>"):
        direct = _single_part(payload, NOW)
        assert direct is not None
        assert direct.raw == build_mime_objects(payload, NOW)
        assert direct.fingerprint == fingerprints(direct.raw)
        assert direct.headers == Headers.parse(direct.raw[: header_end(direct.raw)])


def test_the_generated_headers_need_no_check() -> None:
    # _single_part writes them without the checks every other header gets.
    for headers in _GENERATED.values():
        for name, value in headers:
            assert _plain_value(value) and len(name) + 2 + len(value) <= _FOLD_AT
            assert "=?" not in value and ":" not in name and " " not in name
