"""Narrowing an ESP request to one delivery (sendguard.delivery.passthrough)."""

from __future__ import annotations

import json

from sendguard.delivery import passthrough
from sendguard.delivery.passthrough import MailgunFile
from sendguard.delivery.upstream import Envelope


def envelope(recipient: str) -> Envelope:
    return Envelope("news@shop.example", recipient, "d-1")


SENDGRID = {
    "from": {"email": "news@shop.example"},
    "template_id": "d-123",
    "send_at": 1800000000,
    "custom_args": {"sendguard_campaign": "spring", "order": "o-1"},
    "headers": {"X-Sendguard-Class": "marketing", "X-Custom": "kept"},
    "asm": {"group_id": 7},
    "personalizations": [
        {
            "to": [{"email": "ana@example.org", "name": "Ana"}],
            "cc": [{"email": "Zoë@Bücher.example"}],
            "bcc": [{"email": "hidden@example.org"}],
            "dynamic_template_data": {"first": "Ana"},
            "custom_args": {"sendguard_wait": "1h", "ref": "r"},
            "send_at": 1800000000,
        }
    ],
}


def test_sendgrid_keeps_everything_but_the_other_recipients_and_sendguards_keys() -> None:
    body = passthrough.sendgrid(json.dumps(SENDGRID).encode(), envelope("zoë@bücher.example"))
    (person,) = body["personalizations"]
    assert person == {
        "to": [{"email": "Zoë@Bücher.example"}],  # a Cc recipient is addressed in To
        "dynamic_template_data": {"first": "Ana"},
        "custom_args": {"ref": "r", "sendguard_delivery_id": "d-1"},
    }
    assert body["template_id"] == "d-123" and body["asm"] == {"group_id": 7}
    assert body["custom_args"] == {"order": "o-1"}
    assert body["headers"] == {"X-Custom": "kept"}
    assert "send_at" not in body


def test_sendgrid_drops_emptied_maps() -> None:
    request = {**SENDGRID, "custom_args": {"sendguard_class": "marketing"}, "headers": {}}
    body = passthrough.sendgrid(json.dumps(request).encode(), envelope("ANA@example.org"))
    assert "custom_args" not in body and "headers" not in body
    assert body["personalizations"][0]["to"] == [{"email": "ana@example.org", "name": "Ana"}]


def test_postmark_picks_the_endpoint_and_the_recipient() -> None:
    email = {
        "From": "news@shop.example",
        "To": "Ana <ana@example.org>, ben@example.org",
        "Cc": "cy@example.org",
        "TemplateId": None,
        "TemplateAlias": "welcome",
        "TemplateModel": {"first": "x"},
        "Metadata": {"sendguard_not_before": "2026-12-01T00:00:00Z", "order": "o-1"},
        "Headers": [{"Name": "X-Sendguard-Wait", "Value": "1h"}, {"Name": "X-A", "Value": "b"}],
    }
    path, body = passthrough.postmark(
        json.dumps(email).encode(), envelope("Ben@example.org"), "bulk"
    )
    assert path == "/email/withTemplate"
    assert body["To"] == "ben@example.org" and "Cc" not in body
    assert body["Metadata"] == {"order": "o-1", "sendguard_delivery_id": "d-1"}
    assert body["Headers"] == [{"Name": "X-A", "Value": "b"}]
    assert body["MessageStream"] == "bulk"
    plain = {
        "From": "a@shop.example",
        "To": "ana@example.org",
        "TextBody": "x",
        "MessageStream": "own",
    }
    path, body = passthrough.postmark(
        json.dumps(plain).encode(), envelope("ana@example.org"), "bulk"
    )
    assert path == "/email" and body["MessageStream"] == "own"


def test_mailgun_keeps_its_own_recipient_variables_only() -> None:
    stored = passthrough.dump_mailgun(
        [
            ("from", "news@shop.example"),
            ("to", "Ana <ana@example.org>, ben@example.org"),
            ("cc", "cy@example.org"),
            ("template", "welcome"),
            ("o:deliverytime", "Tue, 01 Dec 2026 10:00:00 +0000"),
            ("v:sendguard_campaign", "spring"),
            ("v:order", "o-1"),
            ("h:X-Sendguard-Class", "marketing"),
            (
                "recipient-variables",
                json.dumps({"ana@example.org": {"n": 1}, "ben@example.org": {"n": 2}}),
            ),
        ],
        [MailgunFile("attachment", "t.txt", "text/plain", b"terms")],
        mime=False,
    )
    form = passthrough.mailgun(stored, envelope("ANA@example.org"))
    assert not form.mime
    assert form.fields == (
        ("to", "Ana <ana@example.org>"),
        ("from", "news@shop.example"),
        ("template", "welcome"),
        ("v:order", "o-1"),
        ("recipient-variables", json.dumps({"ana@example.org": {"n": 1}})),
        ("v:sendguard_delivery_id", "d-1"),
    )
    assert form.files == (MailgunFile("attachment", "t.txt", "text/plain", b"terms"),)


def test_mailgun_mime_loses_sendguards_headers_and_bcc() -> None:
    raw = (
        b"From: a@shop.example\r\nX-Sendguard-Campaign: s\r\nBcc: x@example.org\r\n"
        b"Subject: Hi\r\n\r\nbody\r\n"
    )
    stored = passthrough.dump_mailgun(
        [("to", "ana@example.org")],
        [MailgunFile("message", "m.mime", "message/rfc822", raw)],
        mime=True,
    )
    form = passthrough.mailgun(stored, envelope("ana@example.org"))
    assert form.mime
    assert form.files[0].content == b"From: a@shop.example\r\nSubject: Hi\r\n\r\nbody\r\n"
