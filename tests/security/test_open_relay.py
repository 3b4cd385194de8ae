"""No open relay: a client outside `smtp.allowed_networks` (bound to 127.0.0.2 while only
127.0.0.1 may relay) is refused whatever it tries — address tricks, forged identity commands,
a PROXY header, AUTH it was never offered."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.process import SendguardProcess
from tests.support.raw_smtp import RawSmtp
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

OUTSIDER = "127.0.0.2"

TRICKS = [
    "victim@example.org",
    "VICTIM@EXAMPLE.ORG",
    "victim%example.org@localhost",  # the percent hack
    "victim%example.org@[127.0.0.1]",
    "@localhost:victim@example.org",  # a source route
    "@[127.0.0.1],@localhost:victim@example.org",
    '"victim@example.org"@localhost',  # a quoted local part
    '"victim%example.org"@localhost',
    "example.org!victim@localhost",  # a bang path
    "example.org!victim",
    "victim@[192.0.2.1]",  # IP literals
    "victim@[IPv6:::1]",
    "victim@[127.0.0.1]",
    "victim@example.org.",  # trailing dots
    "victim@localhost.",
    "postmaster",
    "postmaster@localhost",
    "victim@example.org>",
    "victim@example.org> NOTIFY=NEVER",
]


def refused_everywhere(proc: SendguardProcess, client: RawSmtp) -> list[str]:
    """RCPT each trick (twice: bare, and <> wrapped); return those answered 2xx/3xx."""
    let_in = []
    assert client.command("MAIL FROM:<shop@example.com>").startswith("250")
    for address in TRICKS:
        for command in (f"RCPT TO:<{address}>", f"RCPT TO:{address}"):
            answer = client.command(command)
            if not answer.startswith(("5", "4")):
                let_in.append(f"{command} -> {answer}")
    answer = client.command("DATA")
    if not answer.startswith("5"):
        let_in.append(f"DATA -> {answer}")
        client.send(b"Subject: relayed\r\n\r\nx\r\n.\r\n")
        client.reply()
    return let_in


def test_every_relay_trick_from_outside_is_refused(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"allowed_networks": ["127.0.0.1/32"]})
    with RawSmtp(proc.smtp_port, source=OUTSIDER) as client:
        client.greet("localhost")
        assert refused_everywhere(proc, client) == []
    with RawSmtp(proc.smtp_port, source=OUTSIDER) as client:
        client.greet("[127.0.0.1]")
        # Postfix's identity overrides and AUTH nobody offered: not commands here.
        for command in (
            "XCLIENT ADDR=127.0.0.1 NAME=localhost",
            "XFORWARD ADDR=127.0.0.1",
            "AUTH PLAIN AGNybQBzM2NyZXQ=",
        ):
            assert client.command(command)[:1] == "5", command
        assert refused_everywhere(proc, client) == []
    with RawSmtp(proc.smtp_port, source=OUTSIDER) as client:
        # A PROXY protocol header claiming to come from an allowed address.
        client.send(b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 25\r\n")
        assert client.reply().startswith("220")
        client.reply()  # the PROXY line, answered as an unknown command
        assert client.command("EHLO client.example").startswith("250")
        assert refused_everywhere(proc, client) == []
    assert proc.states() == {}
    assert sink.received == []
    refusals = [e for e in proc.log_events() if e.get("event") == "smtp relay refused"]
    assert refusals and all(e["ip"] == OUTSIDER for e in refusals)


def test_the_same_session_from_an_allowed_address_relays(sendguard: Start, sink: Sink) -> None:
    """The control: the refusals above are the relay rule, not a broken session."""
    proc = sendguard(smtp={"allowed_networks": ["127.0.0.1/32"]})
    with RawSmtp(proc.smtp_port, source="127.0.0.1") as client:
        client.greet()
        assert client.command("MAIL FROM:<shop@example.com>").startswith("250")
        assert client.command("RCPT TO:<victim@example.org>").startswith("250")
        assert client.command("DATA").startswith("354")
        client.send(b"Subject: fine\r\n\r\nx\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
    assert sink.wait_for(1, timeout=20)[0].rcpt_tos == ["victim@example.org"]
