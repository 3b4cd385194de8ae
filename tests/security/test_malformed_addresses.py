"""Malformed addresses: 200 and more, each refused over SMTP (RCPT and MAIL) and HTTP (JSON
and a raw message's query), none accepted, none rewritten into something valid.

Moved here from tests/e2e/test_relay_edges.py (issue 10's first trial) and extended to senders.
"""

from __future__ import annotations

import smtplib
import urllib.parse
from collections.abc import Callable

import pytest

from tests.e2e.test_send_path import message
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


def client(proc: SendguardProcess, *, utf8: bool = False) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10)
    smtp.ehlo("client.example")
    if utf8:
        smtp.command_encoding = "utf-8"  # smtplib sends commands as ASCII unless told
    return smtp


# --- malformed addresses ------------------------------------------------------------------

_GOOD_LOCALS = ("ann", "first.last", "x+tag")
_GOOD_DOMAINS = ("example.org", "sub.example.co.uk", "bücher.example")
_BAD_LOCALS = (
    "bad address",
    " ann",
    "ann ",
    # Quoted local parts ('"ann"', '"a b"', '"a\\"b"') are taken since session 10 (RFC 5321
    # 4.1.2), keyed by their content: tests/unit/test_parsing.py.
    '"a"b',  # malformed quoting is still refused
    'a"b"c',
    '""',
    '"ann',
    "a..b",
    ".ann",
    "ann.",
    "a,b",
    "a;b",
    "a:b",
    "a[b",
    "a]b",
    "a(b",
    "a)b",
    "a\\b",
    'a"b',
    "a(comment)b",
    "ann\u200b",  # zero-width space
    "an\u00adn",  # soft hyphen
    "a\u200dnn",  # zero-width joiner
    "\u202eann",  # right-to-left override
    "ann\ufeff",  # byte order mark
    "a" * 65,
    "Ann <ann",
    "@relay.example:ann",  # a source route
    "a<b",
    "a>b",
    "ann\u2060",  # word joiner
    "an\u200cn",  # zero-width non-joiner
    "\u200eann",  # left-to-right mark
    "a\u00a0b",  # no-break space
    "a\tb",
)
_BAD_DOMAINS = (
    "localhost",
    "example",
    "example.org.",
    ".example.org",
    "example..org",
    "exa mple.org",
    "exa_mple.org",
    "-x.org",
    "x-.org",
    "example,org",
    "example;org",
    "mail.local",
    "x.test",
    "x.invalid",
    "host.onion",
    "1.0.0.127.in-addr.arpa",
    "[127.0.0.1]",
    "[IPv6:::1]",
    "ex\u00adample.org",
    "exa\u200bmple.org",
    "☃.example",
    "d" * 64 + ".example",
    ".".join(["d" * 63] * 4) + ".org",
    "example.org (comment)",
    "example.org\u200b",
    "ex!ample.org",
    "ex%ample.org",
    "xn--zz.org",
    "EXAMPLE.ORG.",
    "example.123",
    "ex\u2024ample.org",  # one dot leader, looks like a dot
)


def malformed_addresses() -> list[str]:
    addresses = {f"{local}@{domain}" for local in _BAD_LOCALS for domain in _GOOD_DOMAINS}
    addresses |= {f"{local}@{domain}" for local in _GOOD_LOCALS for domain in _BAD_DOMAINS}
    addresses |= {"", "ann", "@example.org", "ann@", "ann@@example.org", "a@b@example.org"}
    addresses |= {"ann\uff20example.org", "ann@example.org>", "<ann@example.org"}
    return sorted(addresses)


def test_the_malformed_list_is_long_enough() -> None:
    assert len(malformed_addresses()) >= 200


def test_malformed_recipients_over_smtp_are_refused_and_never_rewritten(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    accepted = []
    with client(proc, utf8=True) as smtp:
        # SMTPUTF8, so non-ASCII addresses reach the validator rather than the 5.6.7 rule.
        assert smtp.docmd("MAIL FROM:<shop@example.com> SMTPUTF8")[0] == 250
        for address in malformed_addresses():
            code, reply = smtp.docmd(f"RCPT TO:<{address}>")
            if code < 500:
                accepted.append((address, code, reply))
        assert smtp.docmd("RCPT TO:<fine@example.org>")[0] == 250
        code, reply = smtp.data(message())
        assert code == 250, reply
    assert accepted == []
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["fine@example.org"]
    assert list(proc.states()) == ["fine@example.org"]


def test_malformed_addresses_over_http_are_refused(sendguard: Start) -> None:
    proc = sendguard()
    accepted = []
    for address in malformed_addresses():
        body = {"from": "shop@example.com", "to": [address], "subject": "s", "text": "t"}
        status, answer = proc.call("POST", "/v1/messages", body)
        if status != 400 or answer["error"]["field"] != "to[0]":
            accepted.append((address, status, answer))
        status, answer = proc.call(
            "POST",
            "/v1/messages?to=" + urllib.parse.quote(address),
            raw=message(),
            headers={"Content-Type": "message/rfc822"},
        )
        if status != 400:
            accepted.append((address, status, answer))
    assert accepted == []
    assert proc.states() == {}


def test_malformed_senders_over_smtp_are_refused_and_never_rewritten(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    accepted = []
    with client(proc, utf8=True) as smtp:
        for address in malformed_addresses():
            if not address:
                continue  # <> is the null sender, which relays (bounces)
            code, reply = smtp.docmd(f"MAIL FROM:<{address}> SMTPUTF8")
            if code < 500:
                accepted.append((address, code, reply))
                smtp.rset()
        assert smtp.docmd("MAIL FROM:<shop@example.com> SMTPUTF8")[0] == 250
        assert smtp.docmd("RCPT TO:<fine@example.org>")[0] == 250
        code, reply = smtp.data(message())
        assert code == 250, reply
    assert accepted == []
    (got,) = sink.wait_for(1)
    assert got.mail_from == "shop@example.com"
