"""The header block of a raw message: read it without parsing the body, strip our own headers.

Ingress only needs the headers; the body is stored as it came (minus `X-Sendguard-*`) and is
never parsed on the hot path.
"""

from __future__ import annotations

import email.header
import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SENDGUARD_PREFIX = b"x-sendguard-"
BLIND_HEADERS = (b"bcc:", b"resent-bcc:")
"""Headers naming blind recipients: envelope recipients, never forwarded (RFC 5322 3.6.3)."""
_FOLD = re.compile(r"\r?\n[ \t]+")


def header_end(raw: bytes) -> int:
    """Where the header block of `raw` ends: after the line break of its last header, before
    the blank line that separates headers from body (`len(raw)` if there is none).

    That is one past the first LF followed by an empty line (LF LF, or LF CR LF), where the
    regular expression `\\r?\\n\\r?\\n` first matches. Searches for the two strings find it
    without trying a match at every byte of the header block (the expression has no literal
    start to look for): 6 k instead of 48 k instructions for the bench's newsletter. They look
    in a growing window, so a body (it may be 20 MB) is not searched through for the kind of
    line end the message does not use.
    """
    window = _HEADER_WINDOW
    while True:
        # CRLF first, as SMTP sends it: the LF search then stops where that one ended.
        crlf = raw.find(b"\n\r\n", 0, window)
        lf = raw.find(b"\n\n", 0, window if crlf < 0 else crlf + 2)
        if crlf >= 0 or lf >= 0:
            return (lf if lf >= 0 else crlf) + 1
        if window >= len(raw):
            return len(raw)
        window *= 8


_HEADER_WINDOW = 8192
"""Where `header_end` looks first: past nearly every header block."""


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Split `raw` into its header block and the rest.

    The header block keeps the line break of its last header; the rest starts with the blank
    line that separates headers from body, so `block + rest == raw`. The rest is a copy: code
    that only needs the header block slices `raw[:header_end(raw)]`, since a body may be 20 MB.
    """
    end = header_end(raw)
    return raw[:end], raw[end:]


def _header_lines(block: bytes) -> list[list[bytes]]:
    """Group the lines of a header block into headers (a header and its continuation lines)."""
    headers: list[list[bytes]] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1].append(line)
        elif line.strip():
            headers.append([line])
    return headers


@dataclass(frozen=True)
class Headers:
    """An ordered, case-insensitive view of a message's headers."""

    items: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, block: bytes) -> Headers:
        """Read the headers of a header block; values are unfolded, RFC 2047 words decoded."""
        return cls._of(_header_lines(block))

    @classmethod
    def _of(cls, grouped: list[list[bytes]]) -> Headers:
        """`parse` of a block that `_header_lines` has grouped."""
        items: list[tuple[str, str]] = []
        for lines in grouped:
            text = (lines[0] if len(lines) == 1 else b"".join(lines)).decode("utf-8", "replace")
            name, colon, value = text.partition(":")
            name = name.strip()
            if not colon or not name or " " in name:
                continue  # not a header line; a lenient reader skips it like MUAs do
            if len(lines) > 1:  # one line has no line break inside to unfold
                value = _FOLD.sub(" ", value)
            items.append((name, _decode_words(value.strip())))
        return cls(tuple(items))

    def _by_name(self) -> dict[str, list[str]]:
        # Built on the first look-up: the intake looks up some 25 names (every field's
        # headers), each of which was a walk over every header. Kept in the instance's
        # dict by hand: functools.cached_property takes a lock on every first read (3.11).
        found: dict[str, list[str]] | None = self.__dict__.get("_index")
        if found is None:
            found = {}
            for name, value in self.items:
                found.setdefault(name.lower(), []).append(value)
            self.__dict__["_index"] = found  # not a field: equality and hashing ignore it
        return found

    def get(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        values = self._by_name().get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of header `name`, in order."""
        return list(self._by_name().get(name.lower(), ()))


def _decode_words(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def strip_sendguard_headers(raw: bytes) -> bytes:
    """`raw` without any `X-Sendguard-*` header; everything else byte for byte as it came."""
    end = header_end(raw)
    block = raw[:end]
    if SENDGUARD_PREFIX not in block.lower():
        return raw
    kept = [
        b"".join(lines)
        for lines in _header_lines(block)
        if not lines[0].lower().startswith(SENDGUARD_PREFIX)
    ]
    # The rest starts with the blank line that ends the header block, so joining restores it.
    return b"".join([*kept, memoryview(raw)[end:]])  # one copy of the body, not two


def strip_unforwarded_headers(raw: bytes) -> bytes:
    """`raw` without `X-Sendguard-*`, `Bcc` and `Resent-Bcc`; the rest byte for byte.

    Every copy goes out with its recipient in the envelope only, so a Bcc header would tell
    each recipient who else was blind-copied.
    """
    end = header_end(raw)
    block = raw[:end]
    lowered = block.lower()
    # `bcc`, not `bcc:`: RFC 5322's obsolete syntax allows blanks before the colon (`Bcc :`),
    # and readers take that for a Bcc header too.
    if SENDGUARD_PREFIX not in lowered and b"bcc" not in lowered:
        return raw
    dropped = (SENDGUARD_PREFIX, *BLIND_HEADERS)
    kept = [
        b"".join(lines) for lines in _header_lines(block) if not _name(lines[0]).startswith(dropped)
    ]
    return b"".join([*kept, memoryview(raw)[end:]])  # one copy of the body, not two


@dataclass(frozen=True)
class Incoming:
    """What the intake reads from the header block of every message (`read_incoming`)."""

    headers: Headers
    """`Headers.parse` of the header block."""
    content: bytes
    """`strip_unforwarded_headers` of the message."""
    present: tuple[bool, bool] | None
    """Whether `content` has a `Date` and a `Message-ID` header, as `stamp` looks for them
    (its `present`); None where stripping left no header block of its own (see below)."""


_DATE_NAME, _MESSAGE_ID_NAME = b"date:", b"message-id:"


def read_incoming(raw: bytes) -> Incoming:
    """`Headers.parse`, `strip_unforwarded_headers` and the look of `stamp` for `Date` and
    `Message-ID`, from one split of the header block into headers instead of three (about
    a third of the instructions of the three for the bench's newsletter). Neither header is
    ever stripped, so what `stamp` finds in the stripped block is what is found here, as long
    as the stripped block is the headers kept: where every header before the blank line was
    stripped, `stamp` reads the body that follows as headers, and `present` is None (it
    looks for itself, as before)."""
    end = header_end(raw)
    block = raw[:end]
    grouped = _header_lines(block)
    headers = Headers._of(grouped)
    lowered = block.lower()
    strip = SENDGUARD_PREFIX in lowered or b"bcc" in lowered
    has_date = has_message_id = False
    kept: list[bytes] = []
    dropped = (SENDGUARD_PREFIX, *BLIND_HEADERS)
    for lines in grouped:
        name = _name(lines[0])
        if name == _DATE_NAME:
            has_date = True
        elif name == _MESSAGE_ID_NAME:
            has_message_id = True
        elif strip and name.startswith(dropped):
            continue
        if strip:
            kept.append(b"".join(lines))
    present: tuple[bool, bool] | None = (has_date, has_message_id)
    if not strip:
        return Incoming(headers, raw, present)
    content = b"".join([*kept, memoryview(raw)[end:]])
    if header_end(content) != sum(map(len, kept)):
        present = None
    return Incoming(headers, content, present)


def _name(line: bytes) -> bytes:
    """A header line's name and colon, lower-cased, without blanks before the colon."""
    name, colon, _ = line.partition(b":")
    return name.strip().lower() + colon


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATE = "%s, %02d %s %04d %02d:%02d:%02d %s%02d%02d"


def _format_date(at: datetime) -> str:
    offset = at.utcoffset()
    if offset is None or offset.microseconds or offset.seconds % 60:
        return email.utils.format_datetime(at)  # naive, or an offset of odd seconds
    minutes = offset.days * 1440 + offset.seconds // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    day, month = _DAYS[at.weekday()], _MONTHS[at.month - 1]
    fields = (day, at.day, month, at.year, at.hour, at.minute, at.second, sign, hours, minutes)
    return _DATE % fields  # %-formatting: quicker than an f-string with ten format specs


_EPOCH = datetime.fromtimestamp(0, UTC)
_NO_TIME = timedelta(0)
_ONE_SECOND = timedelta(seconds=1)
_last_date: tuple[datetime, str] = (_EPOCH, _format_date(_EPOCH))
"""The last UTC second `format_date` wrote, and what it wrote: every message received in the
same second (the clock's time is UTC) has the same `Date:` and `Received:` date."""


def format_date(at: datetime) -> str:
    """`at` as a `Date:` header value (RFC 5322 3.3), as `email.utils.format_datetime` writes
    it, in half its time (it calls `strftime`): every message gets one or two. A time in the
    second written last (in UTC) takes its text again: a look-up instead of some 16,000
    instructions of formatting."""
    global _last_date  # noqa: PLW0603 - one entry, replaced whole (a tuple: no torn read)
    if at.tzinfo is UTC:  # a fixed offset: the same second is the same text
        last = _last_date  # one read: another thread may replace it
        if _NO_TIME <= at - last[0] < _ONE_SECOND:  # (`replace` would cost 18 times this)
            return last[1]
        second = at - timedelta(microseconds=at.microsecond)
        text = _format_date(second)
        _last_date = (second, text)
        return text
    return _format_date(at)


@dataclass(frozen=True)
class Trace:
    """How a message reached sendguard, for its `Received:` line (RFC 5321 4.4)."""

    source: str
    """The `from` clause: the client's EHLO name and address, `client.example ([192.0.2.1])`."""
    protocol: str
    """The `with` clause: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP..., or HTTP."""


def received_line(
    trace: Trace, by: str, queue_id: str, recipients: tuple[str, ...], date: str
) -> str:
    """A `Received:` header value; `for` names the recipient only when there is one, so a
    copy never tells who else got the message."""
    recipient = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    return (
        f"from {trace.source}\r\n\tby {by} (sendguard) with {trace.protocol} id {queue_id}"
        f"{recipient};\r\n\t{date}"
    )


def stamp(
    raw: bytes,
    received: str | None,
    date: str,
    message_id: str,
    written: Headers | None = None,
    present: tuple[bool, bool] | None = None,
) -> bytes:
    """`raw` with a `Received:` line on top, and `Date` and `Message-ID` added at the end of
    its header block where it has none (RFC 6409 8); every other byte as it came.

    `written` are `raw`'s headers when sendguard wrote them itself (names without blanks or
    other characters a reader would strip): where they tell which headers `raw` has, its
    header block is not split into headers again to find out. `present`, when given, says
    whether `raw` has a `Date` and a `Message-ID` as this function would find them
    (`Incoming.has_date`, `has_message_id`), likewise.
    """
    end = header_end(raw)
    block = raw[:end]
    # The message's own line ending: bare LF only where it uses bare LF already.
    newline = b"\n" if b"\n" in block and b"\r\n" not in block else b"\r\n"
    if present is not None:
        has_date, has_message_id = present
    elif written is not None:
        has_date = written.get("Date") is not None
        has_message_id = written.get("Message-ID") is not None
    else:
        names = {_name(lines[0]) for lines in _header_lines(block)}
        has_date, has_message_id = b"date:" in names, b"message-id:" in names
    added = b""
    if not has_date:
        added += b"Date: " + date.encode() + newline
    if not has_message_id:
        added += b"Message-ID: " + message_id.encode() + newline
    if block and not block.endswith(b"\n"):
        block += newline  # a message of headers only, without the final line break
    top = b""
    if received is not None:
        top = b"Received: " + received.encode().replace(b"\r\n", newline) + newline
    # The body is copied once, into the result (it may be 20 MB, and a copy holds the loop).
    body = memoryview(raw)[end:] if end < len(raw) else newline  # newline: ends the headers
    return b"".join((top, block, added, body))
