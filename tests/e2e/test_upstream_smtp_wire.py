"""The SMTP upstream's octets on the wire, for large messages sent in pieces.

A recording SMTP server on loopback keeps every octet a client sends. The same content is
sent once by aiosmtplib's `sendmail` (what sendguard did for every message before) and once
by `SmtpUpstream.send`; from MAIL FROM to the terminating dot the two must be identical.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import aiosmtplib
import pytest

from sendguard.delivery.smtp import SmtpUpstream
from sendguard.delivery.smtp_data import PIECE
from sendguard.delivery.upstream import Envelope
from sendguard.errors import UpstreamPermanent, UpstreamTransient
from sendguard.offload import LARGE

pytestmark = pytest.mark.e2e

EHLO = b"250-recorder.example\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n"


@dataclass
class Recorder:
    """A real SMTP server that records each session's octets and answers as scripted.

    `data_reply` answers the end of data; `hang_up_after` closes the connection once that many
    octets of data arrived; `slow` reads data in small sips with pauses, so a client that
    writes faster than it is read must wait (flow control).
    """

    data_reply: bytes = b"250 2.0.0 Ok\r\n"
    hang_up_after: int | None = None
    slow: bool = False
    stall: asyncio.Event | None = None
    """When set, the server reads no data after its 354 until the event is set."""
    sessions: list[bytearray] = field(default_factory=list)
    port: int = 0

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()  # recorded as it arrives, so a test can watch a session
        self.sessions.append(seen)
        writer.write(b"220 recorder.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                seen += line
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(EHLO)
                elif verb == b"QUIT":
                    writer.write(b"221 Bye\r\n")
                    break
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    if self.stall is not None:
                        await self.stall.wait()
                        break
                    if not await self._data(reader, writer, seen):
                        break
                    writer.write(self.data_reply)
                else:
                    writer.write(b"250 Ok\r\n")
                await writer.drain()
        finally:
            writer.close()

    async def _data(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray
    ) -> bool:
        start = len(seen)
        while not seen.endswith(b"\r\n.\r\n"):
            chunk = await reader.read(4096 if self.slow else 1 << 20)
            if not chunk:
                return False
            seen += chunk
            if self.slow:
                await asyncio.sleep(0.001)
            if self.hang_up_after is not None and len(seen) - start > self.hang_up_after:
                return False
        return True

    def transaction(self, session: int) -> bytes:
        """Session `session`'s octets from MAIL FROM to the end of data."""
        octets = bytes(self.sessions[session])
        return octets[octets.index(b"MAIL FROM") :]


@contextlib.asynccontextmanager
async def recording(recorder: Recorder) -> AsyncIterator[Recorder]:
    server = await asyncio.start_server(recorder.session, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        server.close()
        await server.wait_closed()


async def both_ways(recorder: Recorder, content: bytes, options: list[str]) -> tuple[bytes, bytes]:
    """The transaction as aiosmtplib's sendmail sends it, and as SmtpUpstream sends it."""
    recipient = "Ünï@example.org" if "SMTPUTF8" in options else "Mixed.Case@Example.org"
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=recorder.port) as client:
        await client.sendmail("shop@example.com", [recipient], content, mail_options=options)
    upstream = SmtpUpstream("127.0.0.1", recorder.port, starttls="never")
    try:
        envelope = Envelope(
            "shop@example.com",
            recipient,
            "d1",
            smtputf8="SMTPUTF8" in options,
            body_8bit="BODY=8BITMIME" in options,
        )
        await upstream.send(envelope, content)
    finally:
        await upstream.close()
    await asyncio.sleep(0.05)  # the recorder's session ends after the upstream's QUIT
    return recorder.transaction(0), recorder.transaction(1)


def awkward(size: int) -> bytes:
    """About `size` octets of everything DATA must encode: bare LF, bare CR, leading dots,
    8-bit octets, a CRLF around every piece boundary, and no final line end."""
    lines = [
        b"Subject: awkward\r\n\r\n",
        b".a leading dot\r\n",
        b"bare LF\n",
        b"..two dots\n",
        b"bare CR\r",
        b".dot after a bare CR\r\n",
        "8-bit: Grüße\r\n".encode(),
        b"x" * 997 + b"\r\n",
        b"\r\n",
    ]
    content = b"".join(lines[i % len(lines)] for i in range(size // 40 + 10))
    return content[:size].rstrip(b"\r\n")


@pytest.mark.parametrize("size", [LARGE - 1, LARGE, LARGE + 1, LARGE + 2, 2 * LARGE + 7, 3 << 20])
async def test_large_messages_leave_as_aiosmtplib_would_send_them(size: int) -> None:
    content = awkward(size)
    assert len(content) in range(size - 2, size + 1)
    async with recording(Recorder(slow=size > 2 * LARGE)) as recorder:
        reference, pieced = await both_ways(recorder, content, ["SMTPUTF8", "BODY=8BITMIME"])
    assert pieced == reference
    assert b"SIZE=" in reference.split(b"\r\n", 1)[0].upper()


async def test_a_message_ending_in_a_dot_line_and_empty_lines_is_identical() -> None:
    content = b"Subject: dots\n\n" + b".\n" * (LARGE // 2) + b".\r\n\r\n"
    async with recording(Recorder()) as recorder:
        reference, pieced = await both_ways(recorder, content, [])
    assert pieced == reference


async def test_a_refusal_after_the_data_fails_the_delivery_permanently() -> None:
    async with recording(Recorder(data_reply=b"554 5.6.0 content rejected\r\n")) as recorder:
        upstream = SmtpUpstream("127.0.0.1", recorder.port, starttls="never")
        with pytest.raises(UpstreamPermanent, match=r"554 5\.6\.0 content rejected"):
            await upstream.send(
                Envelope("a@example.com", "b@example.org", "d1"), awkward(LARGE * 3)
            )
        await upstream.close()


async def test_an_upstream_that_hangs_up_mid_data_defers_the_delivery() -> None:
    async with recording(Recorder(hang_up_after=LARGE)) as recorder:
        upstream = SmtpUpstream("127.0.0.1", recorder.port, starttls="never")
        with pytest.raises(UpstreamTransient):
            await upstream.send(Envelope("a@example.com", "b@example.org", "d1"), awkward(8 << 20))
        # The broken connection is not reused: the next send opens a new session and succeeds.
        recorder.hang_up_after = None
        await upstream.send(Envelope("a@example.com", "b@example.org", "d2"), awkward(LARGE * 2))
        await upstream.close()
    assert len(recorder.sessions) == 2


async def test_other_tasks_run_between_the_pieces_of_a_large_message() -> None:
    # Interleaving, not a figure: every piece is followed by a turn of the loop, so a
    # concurrent task runs at least once per piece before the upstream sees MAIL FROM
    # (aiosmtplib's sendmail computes SIZE over the whole message in one step first).
    content = awkward(20 << 20)
    turns: list[int] = []
    async with recording(Recorder()) as recorder:
        upstream = SmtpUpstream("127.0.0.1", recorder.port, starttls="never")
        await upstream.check()  # connected and greeted: what remains is the send itself
        sending = asyncio.create_task(
            upstream.send(Envelope("a@example.com", "b@example.org", "d1"), content)
        )
        count = 0
        while not sending.done():
            if not turns and any(b"MAIL FROM" in s for s in recorder.sessions[1:]):
                turns.append(count)
            count += 1
            await asyncio.sleep(0)
        await sending
        await upstream.close()
    assert turns
    assert turns[0] >= len(content) // PIECE


async def test_an_upstream_that_stops_reading_times_out_rather_than_hang() -> None:
    stall = asyncio.Event()
    async with recording(Recorder(stall=stall)) as recorder:
        upstream = SmtpUpstream(
            "127.0.0.1", recorder.port, starttls="never", timeout=timedelta(seconds=1)
        )
        try:
            with pytest.raises(UpstreamTransient, match="took none of the message"):
                await asyncio.wait_for(
                    upstream.send(
                        Envelope("a@example.com", "b@example.org", "d1"), awkward(32 << 20)
                    ),
                    timeout=60,
                )
        finally:
            stall.set()
            await upstream.close()
