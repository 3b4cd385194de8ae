"""nodemailer, the SMTP client of most Node.js apps, sends through sendguard's SMTP listener:
its Message-ID, UTF-8 headers and multipart bodies arrive as it wrote them, Bcc stays blind,
two sends of the same newsletter are two messages, and an app's retry of one message (the
same `messageId` option, a new MIME boundary) is sent once.

`make node-sdks` installs nodemailer from the npm registry into `.venv/node-sdks` (tests/node/).
"""

from __future__ import annotations

from collections.abc import Callable
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_smtp import run_nodemailer
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

# SQLite only: the resend check on PostgreSQL is tests/e2e/test_smtp_resend.py's (both stores).
pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


def nodemailer(
    script: Path, proc: SendguardProcess, *messages: dict[str, Any], pool: bool = False
) -> list[dict[str, Any]]:
    """nodemailer's info for each of `messages`, sent one after the other on one transport."""
    spec = {"pool": pool, "messages": messages}
    infos: list[dict[str, Any]] = run_nodemailer(
        str(script), proc.smtp_port, spec, proc.log()[-2000:]
    )
    for info in infos:
        assert "error" not in info, f"{info}\n{proc.log()[-2000:]}"
    return infos


NEWSLETTER = {
    "from": '"Shöp" <news@shop.example>',
    "to": "ann@example.org",
    "subject": "Grüße: this week's picks",
    "text": "Hello Ann,\n\nthis week: new arrivals.\nhttps://shop.example/new\n",
    "html": (
        '<p>Hello Ann,</p><p>this week: <a href="https://shop.example/new">new arrivals</a>.</p>'
    ),
}


def test_a_nodemailer_message_arrives_as_written_with_bcc_blind(
    sendguard: Start, sink: Sink, nodemailer_script: Path
) -> None:
    proc = sendguard()
    (info,) = nodemailer(
        nodemailer_script, proc, {**NEWSLETTER, "cc": "bo@example.org", "bcc": "hidden@example.org"}
    )
    assert sorted(info["accepted"]) == ["ann@example.org", "bo@example.org", "hidden@example.org"]
    assert info["response"].startswith("250")

    # One upstream transaction per recipient (each has its own delivery and decision).
    got = {r: m for m in sink.wait_for(3) for r in m.rcpt_tos}
    assert sorted(got) == ["ann@example.org", "bo@example.org", "hidden@example.org"]
    for received in got.values():
        assert received.message["Bcc"] is None
    assert b"hidden@example.org" not in got["ann@example.org"].content
    assert b"hidden@example.org" not in got["bo@example.org"].content
    parsed = got["ann@example.org"].message
    assert parsed["Message-ID"] == info["messageId"]
    assert str(make_header(decode_header(parsed["Subject"]))) == NEWSLETTER["subject"]
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.get_payload()] == ["text/plain", "text/html"]
    assert proc.wait_settled() == {
        "ann@example.org": "sent",
        "bo@example.org": "sent",
        "hidden@example.org": "sent",
    }


def test_the_same_newsletter_sent_twice_is_two_messages(
    sendguard: Start, sink: Sink, nodemailer_script: Path
) -> None:
    # Two sendMail calls are two messages (nodemailer writes a Message-ID for each), on a
    # pooled connection too: the resend check must not take the second for a retransmission.
    proc = sendguard()
    first, second = nodemailer(nodemailer_script, proc, NEWSLETTER, NEWSLETTER, pool=True)
    assert first["messageId"] != second["messageId"]
    sink.wait_for(2)
    proc.wait_settled()
    assert [d["state"] for d in proc.deliveries()] == ["sent", "sent"]


def test_an_apps_retry_with_its_message_id_is_sent_once(
    sendguard: Start, sink: Sink, nodemailer_script: Path
) -> None:
    # An app that did not hear back (its own timeout) calls sendMail again with the same
    # `messageId`: nodemailer builds the message anew, with new MIME boundaries and Date.
    # The recipient gets one copy; the app hears 250 both times.
    proc = sendguard()
    retry = {**NEWSLETTER, "messageId": "<order-4711@shop.example>"}
    (first,) = nodemailer(nodemailer_script, proc, retry)
    sink.wait_for(1)
    (again,) = nodemailer(nodemailer_script, proc, retry)
    assert first["response"].startswith("250") and again["response"].startswith("250")
    proc.wait_settled()
    assert len(sink.received) == 1
    states = [d["state"] for d in proc.deliveries()]
    assert states == ["sent", "dropped"], proc.deliveries()
    assert "the client sent it again" in str(proc.deliveries()[-1]["reason"])


def test_an_apps_message_id_reused_for_another_text_is_another_message(
    sendguard: Start, sink: Sink, nodemailer_script: Path
) -> None:
    proc = sendguard()
    reused = {**NEWSLETTER, "messageId": "<fixed@shop.example>"}
    nodemailer(nodemailer_script, proc, reused)
    sink.wait_for(1)
    nodemailer(
        nodemailer_script, proc, {**reused, "text": "Hello Ann,\n\nyour order has shipped.\n"}
    )
    sink.wait_for(2)
    proc.wait_settled()
    assert [d["state"] for d in proc.deliveries()] == ["sent", "sent"]
