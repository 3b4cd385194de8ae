"""The SMTP upstream's transactions against real servers: PIPELINING and every reply checked.

Three kinds of server on loopback: aiosmtpd (offering PIPELINING, with scripted refusals of
MAIL, RCPT and DATA), Postfix's `smtp-sink` (with and without PIPELINING, refusing or hanging
up as told), and a scripted raw server for what neither does on request (withholding replies
until a whole group arrived, accepting DATA after refusing every recipient, a 421 to an idle
connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as AiosmtpdServer  # noqa: N811 - a class, not a constant
from aiosmtpd.smtp import Envelope as AiosmtpdEnvelope
from aiosmtpd.smtp import Session as AiosmtpdSession

from sendguard.delivery.smtp import SmtpUpstream
from sendguard.delivery.upstream import Envelope
from sendguard.errors import UpstreamPermanent, UpstreamTransient
from tests.support.process import free_port

pytestmark = pytest.mark.e2e

CONTENT = b"Subject: hello\r\n\r\n.a line with a leading dot\r\nbody\r\n"


def envelope(n: int = 1) -> Envelope:
    return Envelope("shop@example.com", f"reader{n}@example.org", f"d{n}")


# aiosmtpd, offering PIPELINING ----------------------------------------------------------


@dataclass
class Scripted:
    """aiosmtpd's handler: records what each hook saw, answers MAIL, RCPT and the end of
    data as scripted (one reply each, then 250)."""

    mail: list[str] = field(default_factory=list)
    rcpt: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    ehlos: int = 0

    async def handle_EHLO(
        self,
        server: AiosmtpdServer,
        session: AiosmtpdSession,
        envelope: AiosmtpdEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self.ehlos += 1
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_MAIL(
        self,
        server: AiosmtpdServer,
        session: AiosmtpdSession,
        envelope: AiosmtpdEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        self.seen.append("MAIL")
        if self.mail:
            return self.mail.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: AiosmtpdServer,
        session: AiosmtpdSession,
        envelope: AiosmtpdEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        self.seen.append("RCPT")
        if self.rcpt:
            return self.rcpt.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: AiosmtpdServer, session: AiosmtpdSession, envelope: AiosmtpdEnvelope
    ) -> str:
        self.seen.append("DATA")
        if self.data:
            return self.data.pop(0)
        self.received.append(envelope.original_content or b"")
        return "250 2.0.0 Ok"

    async def handle_RSET(
        self, server: AiosmtpdServer, session: AiosmtpdSession, envelope: AiosmtpdEnvelope
    ) -> str:
        self.seen.append("RSET")
        return "250 OK"


@contextlib.asynccontextmanager
async def aiosmtpd_sink(handler: Scripted) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AiosmtpdServer(handler, hostname="sink.example"), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_many_messages_pipelined_over_one_connection() -> None:
    handler = Scripted()
    async with aiosmtpd_sink(handler) as port:
        upstream = SmtpUpstream("127.0.0.1", port, starttls="never", pool_size=1)
        for n in range(20):
            await upstream.send(envelope(n), CONTENT)
        await upstream.close()
    assert handler.ehlos == 1
    assert handler.received == [CONTENT] * 20
    assert handler.seen == ["MAIL", "RCPT", "DATA"] * 20


@pytest.mark.parametrize(
    ("script", "error", "reason", "seen"),
    [
        (
            {"mail": ["550 5.7.1 sender refused"]},
            UpstreamPermanent,
            "550 5.7.1 sender refused",
            ["MAIL", "RSET"],  # RCPT and DATA refused by aiosmtpd itself: no MAIL yet
        ),
        (
            {"mail": ["451 4.3.0 try later"]},
            UpstreamTransient,
            "451 4.3.0 try later",
            ["MAIL", "RSET"],
        ),
        (
            {"rcpt": ["550 5.1.1 no such user"]},
            UpstreamPermanent,
            "550 5.1.1 no such user",
            ["MAIL", "RCPT", "RSET"],  # DATA answered 503 by aiosmtpd: no recipient
        ),
        (
            {"rcpt": ["452 4.2.2 mailbox full"]},
            UpstreamTransient,
            "452 4.2.2 mailbox full",
            ["MAIL", "RCPT", "RSET"],
        ),
        (
            {"data": ["554 5.6.0 content refused"]},
            UpstreamPermanent,
            "554 5.6.0 content refused",
            ["MAIL", "RCPT", "DATA"],
        ),
    ],
)
async def test_pipelined_refusals_end_the_transaction_and_fail_as_they_say(
    script: dict[str, list[str]], error: type[Exception], reason: str, seen: list[str]
) -> None:
    handler = Scripted(
        mail=script.get("mail", []), rcpt=script.get("rcpt", []), data=script.get("data", [])
    )
    async with aiosmtpd_sink(handler) as port:
        upstream = SmtpUpstream("127.0.0.1", port, starttls="never", pool_size=1)
        with pytest.raises(error, match=re.escape(reason)):
            await upstream.send(envelope(1), CONTENT)
        assert handler.received == []
        # The connection that saw the refusal is not reused; the next send succeeds.
        await upstream.send(envelope(2), CONTENT)
        await upstream.close()
    assert handler.seen == [*seen, "MAIL", "RCPT", "DATA"]
    assert handler.received == [CONTENT]
    assert handler.ehlos == 2


# a scripted raw server -------------------------------------------------------------------


@dataclass
class Raw:
    """A raw SMTP server: records each session's octets; answers RCPT with `rcpt_reply` and
    DATA with `data_reply`. With `pipelining` it offers PIPELINING and withholds every reply
    until a DATA line arrived (a client waiting for MAIL's reply would wait for ever);
    without, it notes any command that arrived before the reply to the one before.
    `idle_421` sends a 421 and hangs up after the first message; `silent` answers nothing
    after EHLO."""

    pipelining: bool = True
    rcpt_reply: bytes = b"250 Ok"
    data_reply: bytes = b"354 go ahead"
    idle_421: bool = False
    silent: bool = False
    sessions: list[bytearray] = field(default_factory=list)
    early: list[bytes] = field(default_factory=list)
    port: int = 0

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()
        self.sessions.append(seen)
        pipelining = b"250-PIPELINING\r\n" if self.pipelining else b""
        writer.write(b"220 raw.example ESMTP\r\n")
        pending: list[bytes] = []
        try:
            while line := await reader.readline():
                seen += line
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-raw.example\r\n" + pipelining + b"250 8BITMIME\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 Bye\r\n")
                    break
                elif self.silent:
                    continue
                else:
                    pending.append(self._reply(verb))
                    if not self.pipelining:
                        await asyncio.sleep(0.05)
                        if reader._buffer:  # type: ignore[attr-defined]
                            self.early.append(line)
                    if self.pipelining and verb in (b"MAIL", b"RCPT"):
                        continue  # withheld until the group's DATA
                    writer.write(b"".join(pending))
                    pending.clear()
                    taken = verb == b"DATA" and self.data_reply.startswith(b"354")
                    if taken and not await self._data(reader, writer, seen):
                        break
                await writer.drain()
        finally:
            writer.close()

    def _reply(self, verb: bytes) -> bytes:
        return {b"RCPT": self.rcpt_reply, b"DATA": self.data_reply}.get(verb, b"250 Ok") + b"\r\n"

    async def _data(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray
    ) -> bool:
        while line := await reader.readline():
            seen += line
            if line == b".\r\n":
                writer.write(b"250 2.0.0 queued\r\n")
                if self.idle_421:
                    await writer.drain()
                    writer.write(b"421 4.4.2 idle too long, closing\r\n")
                    await writer.drain()
                    return False
                return True
        return False


@contextlib.asynccontextmanager
async def raw_server(raw: Raw) -> AsyncIterator[Raw]:
    server = await asyncio.start_server(raw.session, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()
        await server.wait_closed()


async def send_to(raw: Raw, *numbers: int, **options: Any) -> None:
    upstream = SmtpUpstream("127.0.0.1", raw.port, starttls="never", pool_size=1, **options)
    try:
        for n in numbers:
            await asyncio.wait_for(upstream.send(envelope(n), CONTENT), 10)
    finally:
        await upstream.close()
    await asyncio.sleep(0.05)  # the server's session ends after the QUIT


async def test_mail_rcpt_and_data_go_in_one_write_when_pipelining_is_offered() -> None:
    # The server answers nothing before DATA: a client that waited for MAIL's reply would
    # never send RCPT, and the send would time out.
    async with raw_server(Raw(pipelining=True)) as raw:
        await send_to(raw, 1, 2)
    transaction = b"MAIL FROM:<shop@example.com>\r\nRCPT TO:<reader%d@example.org>\r\nDATA\r\n"
    octets = bytes(raw.sessions[0])
    assert transaction % 1 + CONTENT + b".\r\n" + transaction % 2 in octets.replace(
        b"..a line", b".a line"
    )


async def test_without_pipelining_each_command_waits_for_the_reply_before() -> None:
    async with raw_server(Raw(pipelining=False)) as raw:
        await send_to(raw, 1, 2)
    assert raw.early == []
    assert bytes(raw.sessions[0]).count(b"MAIL FROM") == 2


async def test_data_taken_after_every_recipient_was_refused_is_ended_with_a_lone_dot() -> None:
    # RFC 2920 3.1: the client cannot assume DATA is refused because no RCPT was accepted.
    raw = Raw(rcpt_reply=b"550 5.1.1 no such user", data_reply=b"354 go ahead anyway")
    async with raw_server(raw):
        with pytest.raises(UpstreamPermanent, match=r"550 5\.1\.1 no such user"):
            await send_to(raw, 1)
    octets = bytes(raw.sessions[0])
    assert octets.endswith(b"DATA\r\n.\r\nRSET\r\nQUIT\r\n")
    assert b"Subject: hello" not in octets


async def test_an_idle_connection_the_upstream_closed_with_421_is_not_used() -> None:
    async with raw_server(Raw(idle_421=True)) as raw:
        await send_to(raw, 1, 2)
    assert len(raw.sessions) == 2
    assert all(b"RCPT TO:<reader" in bytes(s) for s in raw.sessions)


async def test_an_upstream_that_does_not_answer_the_group_times_out() -> None:
    async with raw_server(Raw(silent=True)) as raw:
        with pytest.raises(UpstreamTransient, match="Timed out waiting"):
            await send_to(raw, 1, timeout=timedelta(seconds=0.5))
    assert b"DATA\r\n" in bytes(raw.sessions[0])


# Postfix's smtp-sink ----------------------------------------------------------------------


@contextlib.contextmanager
def smtp_sink(tmp_path: Path, *flags: str) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / f"sink-{port}.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            ["smtp-sink", *flags, "-u", "nobody", "-c", f"127.0.0.1:{port}", "64"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield port, out
    finally:
        proc.terminate()
        proc.wait(10)


def received(out: Path) -> int:
    found = re.findall(rb"mesg=(\d+)", out.read_bytes())
    return int(found[-1]) if found else 0


async def until_listening(port: int) -> None:
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("flags", [(), ("-p",)], ids=["pipelining", "no-pipelining"])
async def test_smtp_sink_takes_every_message(tmp_path: Path, flags: tuple[str, ...]) -> None:
    with smtp_sink(tmp_path, *flags) as (port, out):
        await until_listening(port)
        upstream = SmtpUpstream("127.0.0.1", port, starttls="never", pool_size=4)
        await asyncio.gather(*(upstream.send(envelope(n), CONTENT * 40) for n in range(40)))
        await upstream.close()
        for _ in range(100):
            if received(out) >= 40:
                break
            await asyncio.sleep(0.05)
    assert received(out) == 40


@pytest.mark.parametrize(
    ("flags", "error", "reason"),
    [
        (("-Q", "MAIL"), UpstreamTransient, "421"),  # a 421 and the connection closed
        (("-f", "RCPT"), UpstreamPermanent, "500 5.3.0 Error: command failed"),
        (("-r", "RCPT"), UpstreamTransient, "450 4.3.0 Error: command failed"),
        (("-f", "DATA"), UpstreamPermanent, "500 5.3.0 Error: command failed"),
        (("-f", "."), UpstreamPermanent, "500 5.3.0 Error: command failed"),
    ],
)
async def test_smtp_sink_refusals(
    tmp_path: Path, flags: tuple[str, ...], error: type[Exception], reason: str
) -> None:
    with smtp_sink(tmp_path, *flags) as (port, _):
        await until_listening(port)
        upstream = SmtpUpstream("127.0.0.1", port, starttls="never", pool_size=1)
        with pytest.raises(error, match=re.escape(reason)):
            await upstream.send(envelope(1), CONTENT)
        await upstream.close()
