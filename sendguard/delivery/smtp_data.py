"""The DATA form of a message for the upstream, never a whole-message step on the loop.

aiosmtplib's `SMTP.sendmail` turns the whole message into its DATA form in one step on the
event loop (two regular expressions over every byte: line endings to CRLF, then dot-stuffing;
a third pass for the SIZE parameter), then writes it in one call. For 20 MB that is seconds
during which no other SMTP session, HTTP request or delivery gets the loop, and regular
expressions hold the GIL, so a thread would not help. Here the same transformation runs on
one piece at a time (`PIECE` octets, cut at line breaks), the loop gets control between the
pieces of a large message, and `smtp_session` writes them with flow control. Most pieces need
no substitution at all, only counting, which is cheaper for a small message too.

The octets are the ones aiosmtplib would send (SIZE included);
tests/unit/test_upstream_smtp_data.py compares them with aiosmtplib's own functions, so a
change in aiosmtplib shows up there.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

from sendguard.offload import LARGE
from sendguard.thread_turns import prompt_turns

__all__ = ["PIECE", "data_pieces", "encode"]

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


async def encode(content: bytes) -> tuple[list[bytes], int]:
    """`content` in DATA form (the pieces of `data_pieces`) and its size for SIZE. A large
    one (above `LARGE`) gives the loop a turn after every piece."""
    pieces: list[bytes] = []
    size = 0
    if len(content) <= LARGE:
        for piece, normal in data_pieces(content):
            pieces.append(piece)
            size += normal
        return pieces, size
    with prompt_turns():  # the SQLite writer gets the GIL between the pieces, not every 5 ms
        for piece, normal in data_pieces(content):
            pieces.append(piece)
            size += normal
            await asyncio.sleep(0)
    return pieces, size
