"""SMTP smuggling (CVE-2023-51764 and kin): a message whose body holds an end of data written
with bare CR or bare LF, followed by a second transaction. Nothing after the false ending may
become a message of its own, here or at the upstream: sendguard must neither read it as the
end of data nor forward a bare CR or LF that a lenient upstream would read as one.

Each ending is tried in a plain session, pipelined in one packet, and after STARTTLS; the
STARTTLS command injection (commands sent in the same packet as STARTTLS) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.support.process import SendguardProcess
from tests.support.raw_smtp import RawSmtp
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

# Every way to write "<line end>.<line end>" but the real one, with bare CR and bare LF.
ENDS = [b"\r\n", b"\n", b"\r"]
FALSE_ENDINGS = [
    before + b"." + after
    for before in ENDS
    for after in ENDS
    if (before, after) != (b"\r\n", b"\r\n")
] + [b"\r\n.\r\r\n", b"\r\n\x00.\r\n"]

SMUGGLED = (
    b"MAIL FROM:<ceo@victim.example>\r\n"
    b"RCPT TO:<smuggled@example.org>\r\n"
    b"DATA\r\n"
    b"From: ceo@victim.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
)


def body(ending: bytes) -> bytes:
    return b"From: shop@example.com\r\nSubject: carrier\r\n\r\nHello" + ending + SMUGGLED


def envelope(rcpt: str) -> bytes:
    return f"MAIL FROM:<shop@example.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()


BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def check(proc: SendguardProcess, sink: Sink, answers: list[str]) -> None:
    """0 extra messages in, 0 bare CR/LF or early ends out."""
    accepted = [a for a in answers if a.startswith("250 2.0.0")]
    assert all(a.startswith(("250 2.0.0", "5")) for a in answers), answers
    states = proc.wait_settled(timeout=30)
    assert "smuggled@example.org" not in states, states
    got = sink.wait_for(len(accepted), timeout=30)
    assert len(got) == len(accepted), [r.rcpt_tos for r in got]
    for received in got:
        assert received.rcpt_tos != ["smuggled@example.org"]
        assert not BARE.search(received.content), received.content
        # The false ending and what followed stayed inside the one message.
        assert b"wire the money" in received.content


def one_by_one(client: RawSmtp, count: int, offset: int = 0) -> list[str]:
    answers = []
    for index in range(count):
        rcpt = f"carrier{offset + index}@example.org"
        assert client.command("MAIL FROM:<shop@example.com>").startswith("250")
        assert client.command(f"RCPT TO:<{rcpt}>").startswith("250")
        assert client.command("DATA").startswith("354")
        client.send(body(FALSE_ENDINGS[index]) + b"\r\n.\r\n")
        answers.append(client.reply())
    return answers


def test_false_endings_in_a_plain_session(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with RawSmtp(proc.smtp_port) as client:
        client.greet()
        answers = one_by_one(client, len(FALSE_ENDINGS))
    check(proc, sink, answers)


def test_false_endings_pipelined_in_one_packet(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    answers = []
    for index, ending in enumerate(FALSE_ENDINGS):
        with RawSmtp(proc.smtp_port) as client:
            client.greet()
            packet = envelope(f"carrier{index}@example.org") + body(ending) + b"\r\n.\r\nQUIT\r\n"
            client.send(packet)
            replies = []
            while not (replies and replies[-1].startswith("221")):
                replies.append(client.reply())
            # MAIL, RCPT, DATA, the one end of data, QUIT: nothing more was read as commands.
            assert [r[:3] for r in replies[:3]] == ["250", "250", "354"], replies
            assert len(replies) == 5, replies
            answers.append(replies[3])
    check(proc, sink, answers)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    return {"cert": str(tmp_path / "server.pem"), "key": str(tmp_path / "server.key")}


def test_false_endings_after_starttls(
    sendguard: Start, sink: Sink, tls_files: dict[str, str]
) -> None:
    proc = sendguard(smtp={"tls": tls_files})
    with RawSmtp(proc.smtp_port) as client:
        client.greet()
        client.starttls()
        assert client.command("EHLO client.example").startswith("250")
        answers = one_by_one(client, len(FALSE_ENDINGS))
    check(proc, sink, answers)


def test_commands_sent_with_starttls_are_ignored(
    sendguard: Start, sink: Sink, tls_files: dict[str, str]
) -> None:
    """CVE-2011-0411: what arrived in the clear with STARTTLS must not run inside TLS."""
    proc = sendguard(smtp={"tls": tls_files})
    with RawSmtp(proc.smtp_port) as client:
        client.greet()
        client.send(
            b"STARTTLS\r\nRSET\r\nMAIL FROM:<ceo@victim.example>\r\n"
            b"RCPT TO:<smuggled@example.org>\r\n"
        )
        assert client.reply().startswith("220")
        client.starttls_handshake()
        # The first reply inside TLS answers this EHLO: nothing injected was answered.
        assert client.command("EHLO client.example").startswith("250")
        assert client.command("RCPT TO:<x@example.org>").startswith("503")
        answers = one_by_one(client, 1)
    check(proc, sink, answers)
    assert sink.received[0].mail_from == "shop@example.com"
