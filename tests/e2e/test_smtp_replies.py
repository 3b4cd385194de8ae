"""SMTP replies as the RFCs and Postfix write them (standards trial, session 9).

- EHLO offers ENHANCEDSTATUSCODES (RFC 2034) and every reply but the greeting, HELO/EHLO and the
  3xx intermediate ones carries an enhanced code, aiosmtpd's own replies too (`221 Bye`,
  `503 Error: need MAIL command`, `500 Line too long` had none).
- A MAIL or RCPT parameter sendguard does not implement is `555 5.5.4` naming it (RFC 5321
  4.1.1.11), DSN's `NOTIFY=`/`ORCPT=`/`RET=`/`ENVID=` included: EHLO does not offer DSN
  (RFC 3461). A keyword with a hyphen (`MT-PRIORITY=3`) is a parameter, not a 501 syntax error.
- `AUTH=` on MAIL (RFC 4954 5, sendmail sends it to a server that offers AUTH) is taken where
  AUTH is offered, and not passed on to the upstream.
- HELP lists MAIL, RCPT and DATA again and gives their syntax.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from sendguard.password import hash_password
from tests.e2e.test_send_path import message
from tests.support.process import SendguardProcess
from tests.support.raw_smtp import RawSmtp
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

ENHANCED = re.compile(rb"[245]\.\d{1,3}\.\d{1,3} ")


def client(proc: SendguardProcess) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10)
    smtp.ehlo("test")
    return smtp


def test_every_reply_after_ehlo_has_an_enhanced_status_code(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        assert smtp.has_extn("enhancedstatuscodes")
        replies = [
            smtp.rcpt("ann@example.org"),  # 503: no MAIL yet
            smtp.docmd("DATA"),  # 503: no RCPT yet
            smtp.docmd("FROBNICATE"),  # 500: not a command
            smtp.docmd("EXPN", "list"),  # 502
            smtp.docmd("VRFY", "ann@example.org"),  # 252
            smtp.docmd("RSET", "now"),  # 501: RSET takes no argument
            smtp.docmd("STARTTLS"),  # 454: no certificate configured
            smtp.noop(),
            smtp.mail("shop@example.com"),
            smtp.mail("shop@example.com"),  # 503: nested MAIL
            smtp.docmd("RCPT TO:", ""),  # 501
            smtp.rset(),
            smtp.docmd("HELP"),
        ]
        quit_reply = smtp.docmd("QUIT")
    for code, text in [*replies, quit_reply]:
        assert ENHANCED.match(text), (code, text)
    codes = [code for code, _ in replies]
    assert codes == [503, 503, 500, 502, 252, 501, 454, 250, 250, 503, 501, 250, 250]
    assert quit_reply == (221, b"2.0.0 Bye")


def test_greeting_and_helo_keep_their_form(sendguard: Start, sink: Sink) -> None:
    # RFC 2034 3: no enhanced code in the greeting nor in the reply to HELO/EHLO.
    proc = sendguard()
    with RawSmtp(proc.smtp_port) as raw:
        greeting = raw.reply()
        raw.send(b"HELO test\r\n")
        helo = raw.reply()
    assert greeting.startswith("220 ") and not ENHANCED.match(greeting[4:].encode())
    assert helo.startswith("250 ") and not ENHANCED.match(helo[4:].encode()), helo


def test_dsn_notify_on_rcpt_is_555_naming_it_and_the_transaction_goes_on(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        assert not smtp.has_extn("dsn")  # so NOTIFY= is a parameter this server does not know
        smtp.mail("shop@example.com")
        code, text = smtp.rcpt(
            "ann@example.org", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;ann@example.org"]
        )
        assert code == 555, text
        assert text.startswith(b"5.5.4 Unsupported option: NOTIFY=SUCCESS,FAILURE"), text
        assert b"ORCPT=rfc822;ann@example.org" in text, text  # as the client wrote it
        assert b"DSN is not offered" in text, text
        assert smtp.rcpt("bob@example.org")[0] == 250
        assert smtp.data(message())[0] == 250
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["bob@example.org"]


def test_dsn_ret_and_envid_on_mail_are_555_naming_them(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        code, text = smtp.mail("shop@example.com", ["SIZE=100", "RET=HDRS", "ENVID=QQ314159"])
    assert code == 555, text
    assert text == b"5.5.4 Unsupported option: RET=HDRS ENVID=QQ314159 (DSN is not offered)"


def test_a_hyphenated_keyword_is_an_unsupported_parameter_not_a_syntax_error(
    sendguard: Start, sink: Sink
) -> None:
    # RFC 5321 4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    proc = sendguard()
    with client(proc) as smtp:
        code, text = smtp.mail("shop@example.com", ["MT-PRIORITY=3"])
        assert (code, text) == (555, b"5.5.4 Unsupported option: MT-PRIORITY=3")
        assert smtp.mail("shop@example.com")[0] == 250
        code, text = smtp.rcpt("ann@example.org", ["X-TAG=a"])
        assert (code, text) == (555, b"5.5.4 Unsupported option: X-TAG=a")
        code, text = smtp.rcpt("ann@example.org", ["X-TAG="])  # an empty value: syntax
        assert code == 501 and text.startswith(b"5.5.4 Syntax: RCPT TO:"), text


def test_a_line_over_1000_octets_in_data_is_500_with_an_enhanced_code(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        smtp.rcpt("ann@example.org")
        code, text = smtp.data(message() + b"x" * 1200 + b"\r\n")
    assert code == 500
    assert text.startswith(b"5.6.0 Line too long"), text
    assert proc.states() == {}


def test_lines_ended_by_a_bare_lf_are_told_to_end_in_crlf(sendguard: Start, sink: Sink) -> None:
    # Session-11 trial: Python's msg.as_bytes() (LF line ends) given to smtplib's sendmail
    # is one long line to SMTP; the answer said only "Line too long" about 76-octet lines.
    proc = sendguard()
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "shop@example.com", "ann@example.org", "News"
    mail.set_content("A short line of the newsletter.\n" * 60)
    with client(proc) as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.sendmail("shop@example.com", ["ann@example.org"], mail.as_bytes())
    code, text = refused.value.smtp_code, refused.value.smtp_error
    assert code == 500 and text.startswith(b"5.6.0 Line too long: its lines end in a bare LF"), text
    assert b"end every line with CRLF" in text, text
    assert proc.states() == {}
    # A line too long of its own is answered as before.
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        smtp.rcpt("ann@example.org")
        code, text = smtp.data(message() + b"x" * 1200 + b"\r\n")
    assert (code, text) == (500, b"5.6.0 Line too long (see RFC 5321 4.5.3.1.6)")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by .ci/run")
def test_swaks_sees_the_enhanced_code_of_a_long_line(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    body = "Subject: long\r\n\r\n" + "x" * 1200 + "\r\n"
    done = subprocess.run(
        [
            *("swaks", "--server", f"127.0.0.1:{proc.smtp_port}"),
            *("--from", "shop@example.com", "--to", "ann@example.org", "--data", "-"),
        ],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "<** 500 5.6.0 Line too long" in done.stdout, done.stdout


def test_auth_parameter_on_mail_is_taken_where_auth_is_offered(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(smtp={"auth_users": {"crm": hash_password("s3cret")}})
    with client(proc) as smtp:
        smtp.login("crm", "s3cret")
        code, text = smtp.mail("shop@example.com", ["AUTH=<>"])
        assert code == 250, text
        assert smtp.rcpt("ann@example.org")[0] == 250
        assert smtp.data(message())[0] == 250
        code, text = smtp.mail("shop@example.com", ["AUTH=shop+2Bx@example.com"])
        assert code == 250, text
        smtp.rset()
        code, text = smtp.mail("shop@example.com", ["AUTH=a+b"])  # `+` only as +HH (xtext)
        assert code == 501, text
    (got,) = sink.wait_for(1)
    assert not any(option.upper().startswith("AUTH") for option in got.mail_options)


def test_auth_parameter_without_auth_offered_is_555(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        assert not smtp.has_extn("auth")
        code, text = smtp.mail("shop@example.com", ["AUTH=<>"])
    assert (code, text) == (555, b"5.5.4 Unsupported option: AUTH=<>")


def test_auth_where_auth_is_not_offered_is_503_not_invalid_credentials(
    sendguard: Start, sink: Sink
) -> None:
    # Found trying the relay by hand: a client that sends AUTH anyway was told `535 5.7.8
    # Authentication credentials invalid`, as if its password were wrong, and each try counted
    # towards the failed-AUTH refusals. Postfix: `503 5.5.1 Error: authentication not enabled`.
    proc = sendguard()
    with client(proc) as smtp:
        assert not smtp.has_extn("auth")
        replies = [smtp.docmd("AUTH", "PLAIN AHRvb2wAczNjcmV0") for _ in range(4)]
        replies.append(smtp.docmd("AUTH", "LOGIN"))
        mail = smtp.mail("shop@example.com")
    assert replies == [(503, b"5.5.1 Error: authentication not enabled")] * 5
    assert mail[0] == 250  # the session goes on


def test_help_lists_mail_rcpt_and_data_and_their_syntax(sendguard: Start, sink: Sink) -> None:
    # sendguard's own MAIL, RCPT, DATA and AUTH had lost aiosmtpd's syntax marks: HELP left
    # them out and `HELP MAIL` was a 501.
    proc = sendguard()
    with client(proc) as smtp:
        code, listed = smtp.docmd("HELP")
        assert code == 250 and set(listed.split()) >= {b"MAIL", b"RCPT", b"DATA"}, listed
        code, text = smtp.docmd("HELP", "MAIL")
    assert (code, text) == (250, b"2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]")


def test_an_unclosed_angle_bracket_is_a_syntax_error(sendguard: Start, sink: Sink) -> None:
    # Found by the session-9 trials: `MAIL FROM:<a@example.com` (no `>`) was taken, the header
    # parser reading the address all the same; RCPT TO likewise.
    proc = sendguard()
    with client(proc) as smtp:
        code, text = smtp.docmd("MAIL FROM:<shop@example.com")
        assert code == 501 and text.startswith(b"5.5.4 Syntax: MAIL FROM:"), text
        code, text = smtp.docmd("MAIL FROM:<shop@example.com SIZE=10")
        assert code == 501 and text.startswith(b"5.5.4 Syntax: MAIL FROM:"), text
        code, text = smtp.docmd("MAIL FROM:shop@example.com>")
        assert code == 501 and text.startswith(b"5.5.4 Syntax: MAIL FROM:"), text
        assert smtp.docmd("MAIL FROM:<>")[0] == 250  # the null reverse-path stays
        smtp.rset()
        assert smtp.docmd("MAIL FROM:shop@example.com")[0] == 250  # no brackets: as before
        code, text = smtp.docmd("RCPT TO:<ann@example.org")
        assert code == 501 and text.startswith(b"5.5.4 Syntax: RCPT TO:"), text
        code, text = smtp.docmd("RCPT TO:ann@example.org>")
        assert code == 501 and text.startswith(b"5.5.4 Syntax: RCPT TO:"), text
        assert smtp.docmd("RCPT TO:bob@example.org")[0] == 250
        assert smtp.data(message())[0] == 250
    (got,) = sink.wait_for(1)
    assert got.mail_from == "shop@example.com"
    assert got.rcpt_tos == ["bob@example.org"]


def test_a_bare_ehlo_is_501_with_an_enhanced_code_as_a_bare_helo(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    with RawSmtp(proc.smtp_port) as raw:
        raw.reply()
        raw.send(b"EHLO\r\n")
        ehlo = raw.reply()
        raw.send(b"HELO\r\n")
        helo = raw.reply()
    assert ehlo == "501 5.5.4 Syntax: EHLO hostname", ehlo
    assert helo == "501 5.5.4 Syntax: HELO hostname", helo


def test_body_binarymime_is_555_not_a_syntax_error(sendguard: Start, sink: Sink) -> None:
    # BINARYMIME needs CHUNKING (RFC 3030), which EHLO does not offer: an unsupported value.
    proc = sendguard()
    with client(proc) as smtp:
        assert not smtp.has_extn("binarymime") and not smtp.has_extn("chunking")
        code, text = smtp.mail("shop@example.com", ["BODY=BINARYMIME"])
        assert (code, text) == (555, b"5.5.4 Unsupported option: BODY=BINARYMIME")
        assert smtp.mail("shop@example.com", ["BODY=7BIT"])[0] == 250
        smtp.rset()
        assert smtp.mail("shop@example.com", ["BODY=8BITMIME"])[0] == 250


def test_help_leaves_auth_out_where_ehlo_does_not_offer_it(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        assert not smtp.has_extn("auth")
        code, listed = smtp.docmd("HELP")
    assert code == 250 and b"AUTH" not in listed.split(), listed


def test_help_lists_auth_where_ehlo_offers_it(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"auth_users": {"crm": hash_password("s3cret")}})
    with client(proc) as smtp:
        assert smtp.has_extn("auth")  # loopback: offered in the clear
        code, listed = smtp.docmd("HELP")
    assert code == 250 and b"AUTH" in listed.split(), listed
