"""The DATA of an SMTP transaction, read in large pieces instead of line by line.

aiosmtpd reads DATA one line at a time (an await, a buffer copy and a length check per line);
for a 100 KB message that is some 1,500 trips through the event loop. This reader asks the
stream for everything up to the next possible end of data and works on whole pieces, with the
same answers as aiosmtpd:

- only `<CRLF>.<CRLF>` ends the data. A dot after a bare LF or a bare CR is an ordinary line
  (SMTP smuggling relies on servers that disagree about this);
- a line (up to CRLF, CRLF included) longer than MAX_LINE octets is answered
  `500 5.6.0 Line too long` after the end of data, not by dropping the connection;
- more than `size_limit` octets is answered `552` after the end of data; nothing more is kept
  in memory once either limit is passed;
- dot-stuffing is undone on bytes: a line that starts with a dot loses that dot.

Lines are delimited by CRLF only, as aiosmtpd delimits them: a bare LF or CR is part of a line.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sendguard.offload import LARGE
from sendguard.thread_turns import PromptWhileBusy

__all__ = ["MAX_LINE", "DataRefused", "read_data"]

MAX_LINE = 1001
"""aiosmtpd's line limit, CRLF included (RFC 5321 4.5.3.1.6 says 1,000 octets)."""

READ_LIMIT = 64 * 1024
"""The stream buffer's limit, so the size of a piece (aiosmtpd's is MAX_LINE). The buffer of a
connection pauses its socket at twice this: 128 KiB at most per connection."""

WAITED = 0.001
"""A read of DATA that took longer than this (seconds) waited for the client."""

_END = b"\n.\r\n"  # the end of data once the CR before it is checked
_CR = 0x0D


@dataclass(frozen=True, slots=True)
class DataRefused:
    """The data was read to its end but is refused; `reply` is aiosmtpd's answer."""

    reply: str


TOO_LONG = DataRefused("500 5.6.0 Line too long (see RFC 5321 4.5.3.1.6)")
"""5.6.0 (RFC 3463: the content is the problem): the sender fixes it by encoding the line."""
TOO_LONG_BARE_LF = DataRefused(
    "500 5.6.0 Line too long: its lines end in a bare LF, which SMTP does not take for a line"
    " break; end every line with CRLF (RFC 5321 2.3.8; Python: as_bytes(policy=email.policy.SMTP)"
    " or smtplib's send_message)"
)
"""TOO_LONG when the over-long line holds a bare LF: a client that wrote its lines with LF
alone (Python's `msg.as_bytes()` given to `sendmail`) sends one long line of short ones, and
is told what to change rather than to encode lines it never made long."""
TOO_MUCH = DataRefused("552 Error: Too much mail data")


class _Collector:
    """Raw pieces in, unstuffed content out; counts octets and checks line lengths."""

    def __init__(self, size_limit: int | None) -> None:
        self._size_limit = size_limit
        self.octets = 0
        self._line = bytearray()  # the line in progress (raw, not yet unstuffed)
        self._done: list[bytes] = []  # complete lines, unstuffed
        self.refused: DataRefused | None = None
        self.last = b"\n"  # the last octet seen; the DATA command's own line ended in LF

    def feed(self, piece: bytes) -> None:
        if not piece:
            return
        self.last = piece[-1:]
        self.octets += len(piece)
        if self.refused is not None:
            return  # past a limit: read to the end, keep nothing
        if self._size_limit and self.octets > self._size_limit:
            self._refuse(TOO_MUCH)
            return
        line = self._line
        line += piece
        end = line.rfind(b"\r\n")
        if end >= 0:
            complete = bytes(line[: end + 2])
            del line[: end + 2]
            longest = max(complete.split(b"\r\n"), key=len)
            if len(longest) + 2 > MAX_LINE:
                self._refuse(TOO_LONG_BARE_LF if b"\n" in longest else TOO_LONG)
                return
            # Every complete run starts a line, so one replace undoes the stuffing of all.
            self._done.append((b"\r\n" + complete).replace(b"\r\n.", b"\r\n")[2:])
        # A CR at the end may be the first half of the CRLF that ends this line.
        if len(line) - line.endswith(b"\r") + 2 > MAX_LINE:
            self._refuse(TOO_LONG_BARE_LF if b"\n" in line else TOO_LONG)

    def _refuse(self, why: DataRefused) -> None:
        self.refused = why
        self._line = bytearray()
        self._done = []

    def content(self) -> bytes:
        assert not self._line, "the end of data follows a CRLF"
        return b"".join(self._done)


async def read_data(reader: asyncio.StreamReader, size_limit: int | None) -> bytes | DataRefused:
    """Read DATA from just after the 354 reply through `<CRLF>.<CRLF>`; consume nothing more.

    Whatever the client pipelined after the end of data stays in `reader` for the command
    loop. The reader's limit should be large (READ_LIMIT): each piece is at most that long.
    """
    collector = _Collector(size_limit)
    with PromptWhileBusy() as turns:
        return await _read(reader, collector, turns)


def _pace(turns: PromptWhileBusy, collector: _Collector, asked: float) -> None:
    """Past LARGE, with the data there as soon as it is asked for (since `asked`), the loop's
    thread works through this message piece after piece: the SQLite writer and readers get the
    GIL promptly meanwhile (thread_turns.py). Not while the client makes it wait."""
    turns.busy(asked > 0.0 and time.monotonic() - asked < WAITED)


async def _read(
    reader: asyncio.StreamReader, collector: _Collector, turns: PromptWhileBusy
) -> bytes | DataRefused:
    at_line_start = True  # just after a CRLF: `.<CRLF>` here ends the data
    while True:
        if at_line_start:
            # The end of data is `.<CRLF>` at a line start, and the CRLF before it has been
            # consumed already, so the search below cannot see it: look at the line's start.
            head = await reader.readexactly(1)
            if head == b".":
                rest = await reader.readexactly(2)
                if rest == b"\r\n":
                    break
                head += rest
            collector.feed(head)
            at_line_start = False
        asked = time.monotonic() if collector.octets > LARGE else 0.0  # small: no clock read
        try:
            piece = await reader.readuntil(_END)
        except asyncio.LimitOverrunError as exc:
            # No end within the buffer's limit: take what cannot hold its start, read on.
            _pace(turns, collector, asked)
            collector.feed(await reader.readexactly(exc.consumed))
            continue
        _pace(turns, collector, asked)
        before = piece[-5] if len(piece) >= 5 else collector.last[0]
        if before == _CR:
            collector.feed(piece[:-3])  # the data, through the CRLF before the dot
            break
        # `<LF>.<CRLF>` after a bare LF is an ordinary line; the CRLF ending it starts a line.
        collector.feed(piece)
        at_line_start = True
    if collector.refused is not None:
        return collector.refused
    return collector.content()
