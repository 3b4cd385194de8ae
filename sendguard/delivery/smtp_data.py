"""A large message's SMTP transaction to the upstream, never a whole-message step on the loop.

aiosmtplib's `SMTP.sendmail` turns the whole message into its DATA form in one step on the
event loop (two regular expressions over every byte: line endings to CRLF, then dot-stuffing;
a third pass for the SIZE parameter), then writes it in one call. For 20 MB that is seconds
during which no other SMTP session, HTTP request or delivery gets the loop, and regular
expressions hold the GIL, so a thread would not help. Here the same transformation runs on
one piece at a time (`PIECE` octets, cut at line breaks), the loop gets control between
pieces, and the pieces are written with flow control: the next waits until the socket has
taken most of the previous one.

The octets on the wire are the ones aiosmtplib would send (SIZE included);
tests/unit/test_upstream_smtp_data.py compares them with aiosmtplib's own functions, so a
change in aiosmtplib shows up there. The envelope goes through aiosmtplib's public API
(`mail`, `rcpt`, `execute_command`); writing DATA in pieces has none, so `_Wire` is the one
place that touches its protocol object, and the same test module fails loudly when that
object changes shape.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import aiosmtplib

__all__ = ["PIECE", "data_pieces", "send_in_pieces"]

PIECE = 256 * 1024
"""About how many octets of a message are turned into DATA form in one step on the loop."""

# As aiosmtplib's protocol.LINE_ENDINGS_REGEX: a CRLF, a bare LF or a bare CR is one line end.
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")


def _cut(content: bytes, start: int, size: int) -> int:
    """Where the piece that starts at `start` ends: after the last LF within `size` octets
    (never inside a CRLF), or at the end of the content."""
    end = start + size
    if end >= len(content):
        return len(content)
    newline = content.rfind(b"\n", start, end)
    if newline >= start:
        return newline + 1
    # One line longer than a piece: cut inside it, but never between a CR and its LF.
    return end + 1 if content[end - 1 : end + 1] == b"\r\n" else end


def data_pieces(content: bytes, size: int = PIECE) -> Iterator[tuple[bytes, int]]:
    """`content` as DATA sends it, in pieces: (octets to write, their length before stuffing).

    Every line end becomes CRLF, a line that starts with "." gets another (RFC 5321 4.5.2),
    the content ends with CRLF and the last piece carries the terminating ".<CRLF>". The sum of
    the second items is the message size as RFC 1870 counts it (lines ends as CRLF, dots not
    doubled): what aiosmtplib puts in MAIL FROM's SIZE parameter.
    """
    start = 0
    at_line_start = True
    last = b""
    while start < len(content):
        end = _cut(content, start, size)
        piece = content[start:end]
        # Most pieces need no change: counting is much cheaper than substituting.
        lone_ends = piece.count(b"\r") + piece.count(b"\n") != 2 * piece.count(b"\r\n")
        normal = _LINE_END.sub(b"\r\n", piece) if lone_ends else piece
        # In CRLF text, "^" of a multi-line pattern is right after LF (or the piece's start).
        stuffed = normal.replace(b"\n.", b"\n..")
        if at_line_start and normal.startswith(b"."):
            stuffed = b"." + stuffed
        at_line_start = piece.endswith((b"\n", b"\r"))
        start = end
        if start < len(content):
            yield stuffed, len(normal)
        else:
            last = piece
            final = stuffed if at_line_start else stuffed + b"\r\n"
            yield final + b".\r\n", len(normal) + (0 if at_line_start else 2)
    if not last:  # empty content: aiosmtplib sends one empty line
        yield b"\r\n.\r\n", 2


async def _encode(content: bytes) -> tuple[list[bytes], int]:
    """Every piece of `content` in DATA form and the size for SIZE, yielding between pieces."""
    pieces: list[bytes] = []
    size = 0
    for piece, normal in data_pieces(content):
        pieces.append(piece)
        size += normal
        await asyncio.sleep(0)
    return pieces, size


class _Wire:
    """The DATA octets written to aiosmtplib's protocol with flow control: the only code that
    relies on what aiosmtplib does not document (its protocol's `_drain_helper`, which is
    asyncio's StreamWriter.drain hook, copied into aiosmtplib's FlowControlMixin)."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        protocol: Any = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._protocol = protocol

    async def send(self, pieces: list[bytes], seconds: float | None) -> aiosmtplib.SMTPResponse:
        """Write every piece, then read the reply to the terminating dot; each wait for the
        upstream (to take a piece, to reply) gives up after `seconds`."""
        for piece in pieces[:-1]:
            self._protocol.write(piece)
            try:
                await asyncio.wait_for(self._protocol._drain_helper(), seconds)
            except TimeoutError as exc:
                raise aiosmtplib.SMTPTimeoutError(
                    f"the upstream took none of the message for {seconds} s"
                ) from exc
        # No await between the last write and reading the reply: the protocol drops a
        # reply that arrives while nobody is reading one.
        self._protocol.write(pieces[-1])
        response: aiosmtplib.SMTPResponse = await self._protocol.read_response(timeout=seconds)
        return response


async def send_in_pieces(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    content: bytes,
    options: list[str],
    *,
    seconds: float | None,
) -> None:
    """MAIL, RCPT and DATA for one recipient as `client.sendmail` would send them, with the
    content turned into DATA form and written piece by piece.

    Raises what `sendmail` raises (SMTPResponseException and its kinds, SMTPServerDisconnected,
    SMTPTimeoutError, ValueError for an address that cannot go on a command line); every wait
    for the upstream gives up after `seconds`. A failure after DATA leaves the connection in
    an unknown state: it is closed.
    """
    pieces, size = await _encode(content)
    encoding = "utf-8" if any(o.lower() == "smtputf8" for o in options) else "ascii"
    if client.supports_extension("size"):
        options = [f"size={size}", *options]
    await client.mail(sender, options=options, encoding=encoding)
    await client.rcpt(recipient, encoding=encoding)
    start = await client.execute_command(b"DATA")
    if start.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    try:
        reply = await _Wire(client).send(pieces, seconds)
    except BaseException:
        client.close()
        raise
    if reply.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
