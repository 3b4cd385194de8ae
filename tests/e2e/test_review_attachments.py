"""An approval covers the campaign's attachments, not only its text and links: the approved
PDF, however it is encoded, flows to later recipients; a swapped PDF, or an `offer.html` sent
as `application/octet-stream` with other bytes, is held with a reason naming the file and its
digest; approving the changed copy lets it flow. Over SMTP (on both stores) and SendGrid's
endpoint (`attachments[]`)."""

from __future__ import annotations

import base64
import email.policy
import hashlib
import smtplib
import sqlite3
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.test_review_bound import reason
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

Start = Callable[..., SendguardProcess]

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(256))
SWAPPED = PDF.replace(b"Catalog", b"Catalo9")
OFFER = b'<html><body><a href="https://shop.example/offer">Your offer</a></body></html>'
EVIL = b'<html><body><a href="https://shop.example.evil.example/pay">Your offer</a></body></html>'


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def smtp_send(
    proc: SendguardProcess,
    recipient: str,
    campaign: str,
    files: list[tuple[str, bytes, str]],
    cte: str | None = None,
    message_class: str | None = None,
) -> str:
    """A campaign message with `files` (name, bytes, MIME type) attached, over SMTP."""
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = recipient
    msg["Subject"] = "Your spring offer"
    msg["X-Campaign"] = campaign
    if message_class is not None:
        msg["X-Sendguard-Class"] = message_class
    msg.set_content("Your offer is attached: https://shop.example/spring")
    for name, data, content_type in files:
        maintype, _, subtype = content_type.partition("/")
        extra = {"cte": cte} if cte else {}
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name, **extra)
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        code, reply = client.rcpt(recipient)
        assert code == 250, reply
        code, reply = client.data(msg.as_bytes(policy=email.policy.SMTP))
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def approve(proc: SendguardProcess, campaign: str) -> None:
    status, answer = proc.call("POST", f"/v1/campaigns/{campaign}/approve", {"note": "checked"})
    assert status == 200, answer


@pytest.mark.e2e
@pytest.mark.both_backends
def test_smtp_an_approval_covers_the_attachments_it_saw(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    pdf = [("offer.pdf", PDF, "application/pdf")]
    first = smtp_send(proc, "first@example.org", "spring", pdf)
    proc.wait_states({"first@example.org": "held"}, first)
    approve(proc, "spring")
    proc.wait_states({"first@example.org": "sent"}, first)

    # the same PDF to others flows, quoted-printable instead of base64 too
    same = smtp_send(proc, "bob@example.org", "spring", pdf)
    recoded = smtp_send(proc, "eve@example.org", "spring", pdf, cte="quoted-printable")
    # a swapped PDF under the same name, and a second file added, are held
    swapped = smtp_send(
        proc, "a@example.org", "spring", [("offer.pdf", SWAPPED, "application/pdf")]
    )
    added = smtp_send(
        proc, "b@example.org", "spring", [*pdf, ("terms.pdf", b"%PDF-1.4 terms", "application/pdf")]
    )
    proc.wait_states({"bob@example.org": "sent"}, same)
    proc.wait_states({"eve@example.org": "sent"}, recoded)
    proc.wait_states({"a@example.org": "held"}, swapped)
    proc.wait_states({"b@example.org": "held"}, added)
    why = reason(proc, "a@example.org")
    assert "campaign spring: attachments changed since token-1 approved this content on" in why
    assert why.endswith(
        f"new attachment offer.pdf ({digest(SWAPPED)});"
        f" removed attachment offer.pdf ({digest(PDF)})"
    ), why
    assert reason(proc, "b@example.org").endswith(
        f"new attachment terms.pdf ({digest(b'%PDF-1.4 terms')})"
    )

    # a per-recipient invoice sent as transactional mail of the campaign is not held
    invoice = smtp_send(
        proc,
        "inv@example.org",
        "spring",
        [("invoice-4711.pdf", b"%PDF-1.4 invoice 4711", "application/pdf")],
        message_class="transactional",
    )
    proc.wait_states({"inv@example.org": "sent"}, invoice)

    # an HTML file sent as application/octet-stream: another link inside it is another file
    octet = [("offer.html", OFFER, "application/octet-stream")]
    autumn = smtp_send(proc, "first@example.org", "autumn", octet)
    proc.wait_states({"first@example.org": "held"}, autumn)
    approve(proc, "autumn")
    proc.wait_states({"first@example.org": "sent"}, autumn)
    evil = smtp_send(
        proc, "c@example.org", "autumn", [("offer.html", EVIL, "application/octet-stream")]
    )
    proc.wait_states({"c@example.org": "held"}, evil)
    assert f"new attachment offer.html ({digest(EVIL)})" in reason(proc, "c@example.org")
    received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == [
        "bob@example.org",
        "eve@example.org",
        "first@example.org",
        "first@example.org",
        "inv@example.org",
    ]

    # approving the changed copy (one delivery) records it: later sends of it flow
    (held,) = proc.deliveries(swapped)
    status, answer = proc.call("POST", f"/v1/deliveries/{held['id']}/approve", {})
    assert status == 200, answer
    proc.wait_states({"a@example.org": "sent"}, swapped)
    again = smtp_send(proc, "a2@example.org", "spring", [("offer.pdf", SWAPPED, "application/pdf")])
    proc.wait_states({"a2@example.org": "sent"}, again)


def sendgrid_send(proc: SendguardProcess, recipient: str, data: bytes) -> None:
    body = {
        "from": {"email": "billing@shop.example"},
        "personalizations": [{"to": [{"email": recipient}]}],
        "subject": "Your spring offer",
        "content": [{"type": "text/plain", "value": "Your offer is attached."}],
        "attachments": [
            {
                "content": base64.b64encode(data).decode(),
                "filename": "offer.pdf",
                "type": "application/pdf",
            }
        ],
        "custom_args": {"campaign": "spring"},
    }
    status, answer = proc.call("POST", "/v3/mail/send", body)
    assert status == 202, answer


@pytest.mark.e2e
def test_sendgrid_attachments_are_covered_too(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    sendgrid_send(proc, "first@example.org", PDF)
    proc.wait_states({"first@example.org": "held"})
    approve(proc, "spring")
    proc.wait_states({"first@example.org": "sent"})
    sendgrid_send(proc, "bob@example.org", PDF)
    sendgrid_send(proc, "a@example.org", SWAPPED)
    proc.wait_states({"bob@example.org": "sent", "a@example.org": "held"})
    assert reason(proc, "a@example.org").endswith(
        f"new attachment offer.pdf ({digest(SWAPPED)});"
        f" removed attachment offer.pdf ({digest(PDF)})"
    )
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["bob@example.org", "first@example.org"]


@pytest.mark.e2e
def test_an_approval_bound_to_links_before_attachments_holds_its_file_once(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    """Upgrade: an approval recorded by session 10's sendguard has links without attachment
    pairs (made here by taking them out of the stored approval); the approved file is held
    once, named; approving again lets it flow (docs/review.md)."""
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    pdf = [("offer.pdf", PDF, "application/pdf")]
    first = smtp_send(proc, "first@example.org", "spring", pdf)
    proc.wait_states({"first@example.org": "held"}, first)
    approve(proc, "spring")
    proc.wait_states({"first@example.org": "sent"}, first)
    proc.stop()
    conn = sqlite3.connect(tmp_path / "var" / "sendguard.db", isolation_level=None)
    updated = conn.execute("UPDATE approvals SET links = 'link:shop.example'").rowcount
    conn.close()
    assert updated == 1

    proc = sendguard(policies=[{"plugin": "human_hold"}])
    again = smtp_send(proc, "bob@example.org", "spring", pdf)
    proc.wait_states({"bob@example.org": "held"}, again)
    assert reason(proc, "bob@example.org").endswith(f"new attachment offer.pdf ({digest(PDF)})")
    approve(proc, "spring")
    proc.wait_states({"bob@example.org": "sent"}, again)
    later = smtp_send(proc, "eve@example.org", "spring", pdf)
    proc.wait_states({"eve@example.org": "sent"}, later)
