"""RFC 2920 command pipelining: offered in EHLO; a group's replies go out in one write.

The real protocol on loopback with an intake that accepts at once; the connection's stream
writer counts its writes (each is a system call and a wake-up of the client).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sendguard.config import SmtpOptions
from tests.support.smtp_ingress import connected


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    writes: list[bytes] = field(default_factory=list)
    """What the server wrote, one item per write."""

    async def replies(self, count: int) -> list[bytes]:
        """The next `count` replies (a multi-line reply is one), each whole."""
        got: list[bytes] = []
        current = b""
        while len(got) < count:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            assert line, f"closed after {got!r}"
            current += line
            if line[3:4] != b"-":
                got.append(current)
                current = b""
        return got

    def send(self, data: bytes) -> None:
        self.writer.write(data)


def _counted(write: Callable[[bytes], Any], writes: list[bytes]) -> Callable[[bytes], Any]:
    def counting(data: bytes) -> Any:
        writes.append(bytes(data))
        return write(data)

    return counting


@asynccontextmanager
async def client() -> AsyncIterator[Client]:
    async with connected(SmtpOptions()) as (ingress, reader, writer):
        (connection,) = ingress.connections
        got = Client(reader, writer)
        connection._writer.write = _counted(connection._writer.write, got.writes)  # type: ignore[method-assign]
        yield got


BODY = b"Subject: pipelined\r\n\r\nbody\r\n.\r\n"


async def test_ehlo_offers_pipelining() -> None:
    async with client() as c:
        c.send(b"EHLO client.example\r\n")
        (ehlo,) = await c.replies(1)
    assert b"250-PIPELINING\r\n" in ehlo, ehlo
    assert ehlo.endswith(b"250 HELP\r\n")


async def test_a_group_is_answered_in_order_in_one_write() -> None:
    async with client() as c:
        c.send(b"EHLO client.example\r\n")
        await c.replies(1)
        c.writes.clear()
        c.send(
            b"MAIL FROM:<shop@example.com>\r\nRCPT TO:<ann@example.org>\r\n"
            b"RCPT TO:<bad address@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        )
        replies = await c.replies(5)
        assert [r[:3] for r in replies] == [b"250", b"250", b"553", b"250", b"354"], replies
        assert len(c.writes) == 1, c.writes
        # The end of the data, a second transaction's group and QUIT, in one packet.
        c.writes.clear()
        c.send(
            BODY + b"RSET\r\nMAIL FROM:<shop@example.com>\r\nRCPT TO:<cy@example.org>\r\nDATA\r\n"
        )
        replies = await c.replies(5)
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"250", b"354"], replies
        assert b"queued as" in replies[0]
        assert len(c.writes) == 1, c.writes
        c.writes.clear()
        c.send(BODY + b"QUIT\r\n")
        replies = await c.replies(2)
        assert [r[:3] for r in replies] == [b"250", b"221"], replies
        assert len(c.writes) == 1, c.writes


async def test_a_client_that_waits_gets_each_reply_at_once() -> None:
    async with client() as c:
        for line, code in [
            (b"HELO client.example", b"250"),
            (b"MAIL FROM:<shop@example.com>", b"250"),
            (b"RCPT TO:<ann@example.org>", b"250"),
            (b"DATA", b"354"),
            (BODY[:-2], b"250"),
            (b"RSET", b"250"),
            (b"QUIT", b"221"),
        ]:
            c.send(line + b"\r\n")
            (reply,) = await c.replies(1)
            assert reply[:3] == code, (line, reply)
        assert len(c.writes) == 7


async def test_replies_held_before_ehlo_go_first() -> None:
    async with client() as c:
        c.send(b"RSET\r\nEHLO client.example\r\nNOOP\r\n")
        rset, ehlo, noop = await c.replies(3)
    assert rset.startswith(b"250 ") and noop.startswith(b"250 ")
    assert ehlo.startswith(b"250-") and b"PIPELINING" in ehlo


async def test_data_after_a_pipelined_data_is_data_not_commands() -> None:
    # A client that does not wait for 354: the lines after DATA are the message.
    async with client() as c:
        c.send(b"HELO c\r\nMAIL FROM:<shop@example.com>\r\nRCPT TO:<ann@example.org>\r\nDATA\r\n")
        c.send(b"Subject: x\r\n\r\nRCPT TO:<evil@example.org>\r\n.\r\nQUIT\r\n")
        replies = await c.replies(6)
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354", b"250", b"221"], replies
