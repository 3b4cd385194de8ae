from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from sendguard.ingress.api_send import build_mime
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
