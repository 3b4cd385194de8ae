"""An approved campaign's personalised copies flow (session-11 trial): per-recipient tokens in
the URLs of a text/plain part (SMTP) and the recipient's name in the subject (SendGrid SDK
substitutions) are not a content change; a changed offer, a new link host or a changed subject
wording still is, and is held again. On both stores."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from email.header import decode_header, make_header
from typing import Any

import pytest
from sendgrid import SendGridAPIClient

from tests.e2e.test_review_bound import reason
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

TEXT = (
    "Hi {name},\r\n\r\n"
    "Our spring picks are in: boots 40% off until Sunday.\r\n"
    "Shop them: https://u123.ct.sendgrid.net/ls/click?upn={token}\r\n"
    "Unsubscribe: https://shop.example/subscription/0b6f/{token}\r\n"
)


def smtp_text(proc: SendguardProcess, recipient: str, text: str) -> str:
    """A text/plain message of campaign `spring` over SMTP; its queue id."""
    content = (
        "From: shop@example.com\r\n"
        f"To: {recipient}\r\n"
        "Subject: Spring picks\r\n"
        "X-Campaign: spring\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}"
    ).encode()
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        code, reply = client.rcpt(recipient)
        assert code == 250, reply
        code, reply = client.data(content)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def approve(proc: SendguardProcess) -> None:
    status, answer = proc.call("POST", "/v1/campaigns/spring/approve", {"note": "checked"})
    assert status == 200, answer


def test_text_url_tokens_of_an_approved_campaign_flow(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    first = smtp_text(proc, "ann@example.org", TEXT.format(name="Ann", token="YW5uQGV4"))
    proc.wait_states({"ann@example.org": "held"}, first)
    approve(proc)
    proc.wait_states({"ann@example.org": "sent"}, first)

    # Other recipients: other names, other tokens in the query and in the path.
    for name, token in (("Bob", "Ym9iQGV4-2"), ("Eve", "ZXZlQGV4_93.x")):
        copy = smtp_text(proc, f"{name.lower()}@example.org", TEXT.format(name=name, token=token))
        proc.wait_states({f"{name.lower()}@example.org": "sent"}, copy)

    # A changed offer, and a link to a new host: held, the host named.
    offer = smtp_text(proc, "o@example.org", TEXT.format(name="O", token="x").replace("40", "60"))
    moved = smtp_text(
        proc,
        "m@example.org",
        TEXT.format(name="M", token="y").replace("u123.ct.sendgrid.net", "shop.evil.example"),
    )
    proc.wait_states({"o@example.org": "held"}, offer)
    proc.wait_states({"m@example.org": "held"}, moved)
    assert "campaign spring: content changed since" in reason(proc, "o@example.org")
    why = reason(proc, "m@example.org")
    assert "campaign spring: links changed since" in why, why
    assert why.endswith(
        "new link host shop.evil.example; removed link host u123.ct.sendgrid.net"
    ), why
    received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == ["ann@example.org", "bob@example.org", "eve@example.org"]


def sendgrid_request(subject: str, names: list[str], offer: str = "40%") -> dict[str, Any]:
    """One SendGrid request of campaign `spring`, a personalization per name, `-name-` and
    `-token-` substituted (as SendGrid's legacy substitutions are)."""
    return {
        "from": {"email": "news@shop.example"},
        "subject": subject,
        "categories": ["spring"],
        "content": [
            {
                "type": "text/plain",
                "value": f"Hi -name-, boots are {offer} off.\n"
                "https://u123.ct.sendgrid.net/ls/click?upn=-token-",
            }
        ],
        "personalizations": [
            {
                "to": [{"email": f"{name.lower()}@example.org"}],
                "substitutions": {"-name-": name, "-token-": f"{name.lower()}-4711"},
            }
            for name in names
        ],
    }


def decoded(subject: str) -> str:
    return str(make_header(decode_header(subject)))


def test_a_name_in_the_subject_of_an_approved_campaign_flows(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    send = client.client.mail.send.post

    assert send(request_body=sendgrid_request("-name-, your spring picks", ["Ann"])).status_code
    proc.wait_states({"ann@example.org": "held"})
    approve(proc)
    proc.wait_states({"ann@example.org": "sent"})
    assert sink.wait_for(1)[0].message["Subject"] == "Ann, your spring picks"

    # Every later personalization flows, the greeting form of the subject too.
    send(request_body=sendgrid_request("-name-, your spring picks", ["Bob", "Zoë"]))
    send(request_body=sendgrid_request("Hi -name-, your spring picks", ["Cy"]))
    proc.wait_states(
        {"bob@example.org": "sent", "zoë@example.org": "sent", "cy@example.org": "sent"}
    )

    # Changed wording of the subject, or a changed offer: held.
    send(request_body=sendgrid_request("-name-, your autumn picks", ["Dan"]))
    send(request_body=sendgrid_request("-name-, your spring picks", ["Fay"], offer="70%"))
    proc.wait_states({"dan@example.org": "held", "fay@example.org": "held"})
    assert "campaign spring: content changed since" in reason(proc, "dan@example.org")
    subjects = sorted(decoded(r.message["Subject"]) for r in sink.wait_for(4))
    assert subjects == [
        "Ann, your spring picks",
        "Bob, your spring picks",
        "Hi Cy, your spring picks",
        "Zoë, your spring picks",
    ]
