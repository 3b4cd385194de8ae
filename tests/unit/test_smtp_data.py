"""The DATA reader answers as aiosmtpd's line-by-line reader did, however the bytes arrive."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendguard.ingress.smtp_data import MAX_LINE, TOO_LONG, TOO_MUCH, DataRefused, read_data


def reference(stream: bytes, size_limit: int | None) -> tuple[bytes | DataRefused, bytes]:
    """aiosmtpd 1.4's smtp_DATA, line by line: (what it answers, what it leaves unread)."""
    pos = 0
    octets = 0
    lines: list[bytes] = []
    refused: DataRefused | None = None
    while True:
        end = stream.find(b"\r\n", pos)
        assert end >= 0, "the stream holds an end of data"
        line, pos = stream[pos : end + 2], end + 2
        if line == b".\r\n":
            break
        octets += len(line)
        if refused is None and size_limit and octets > size_limit:
            refused = TOO_MUCH
        if refused is None and len(line) > MAX_LINE:
            refused = TOO_LONG
        lines.append(line[1:] if line.startswith(b".") else line)
    return (refused or b"".join(lines)), stream[pos:]


async def run(
    stream: bytes, pieces: list[int], size_limit: int | None, limit: int
) -> tuple[bytes | DataRefused, bytes]:
    """Feed `stream` in pieces of the given sizes to a real StreamReader while it is read."""
    reader = asyncio.StreamReader(limit=limit)
    task = asyncio.create_task(read_data(reader, size_limit))
    at = 0
    for size in pieces:
        reader.feed_data(stream[at : at + size])
        at += size
        await asyncio.sleep(0)
    reader.feed_data(stream[at:])
    reader.feed_eof()
    result = await task
    return result, await reader.read()


def read(
    stream: bytes, size_limit: int | None = None, limit: int = 64 * 1024
) -> bytes | DataRefused:
    result, rest = asyncio.run(run(stream, [], size_limit, limit))
    assert rest == reference(stream, size_limit)[1]
    return result


ATOMS = [
    b"a",
    b"x" * 40,
    b".",
    b"..",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n.",
    b"\n.\r\n",
    b"\r\n.\r",
    b"\xc3\xa9",
]
END = b"\r\n.\r\n"


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(st.sampled_from(ATOMS), max_size=60).map(b"".join),
    after=st.sampled_from(
        [b"", b"QUIT\r\n", b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"]
    ),
    pieces=st.lists(st.integers(min_value=1, max_value=50), max_size=10),
    size_limit=st.one_of(st.none(), st.integers(min_value=1, max_value=3000)),
    limit=st.sampled_from([8, 16, 64, 64 * 1024]),
)
def test_same_answer_as_aiosmtpd_however_the_bytes_arrive(
    body: bytes, after: bytes, pieces: list[int], size_limit: int | None, limit: int
) -> None:
    stream = body + END + after
    expected, rest = reference(stream, size_limit)
    got, left = asyncio.run(run(stream, pieces, size_limit, limit))
    assert left == rest  # nothing after the end of data is taken from the command stream
    if isinstance(expected, DataRefused):
        assert isinstance(got, DataRefused)
    else:
        assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=1200), min_size=1, max_size=5),
    pieces=st.lists(st.integers(min_value=1, max_value=700), max_size=6),
)
def test_line_length_is_checked_like_aiosmtpd(lengths: list[int], pieces: list[int]) -> None:
    stream = b"".join(b"y" * n + b"\r\n" for n in lengths) + b".\r\n"
    expected, _ = reference(stream, None)
    got, _ = asyncio.run(run(stream, pieces, None, 64 * 1024))
    assert got == expected
    assert (got == TOO_LONG) == any(n + 2 > MAX_LINE for n in lengths)


def test_an_empty_message_is_a_lone_dot() -> None:
    assert read(b".\r\nQUIT\r\n") == b""


def test_dot_stuffing_is_undone_on_every_line_and_only_there() -> None:
    assert read(b"..\r\n..a\r\nb.\r\n.\r\n") == b".\r\n.a\r\nb.\r\n"
    assert read(b"a\n..\r\n.\r\n") == b"a\n..\r\n"  # after a bare LF the line goes on


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b"\r\n.\r\r\n"],
)
def test_only_crlf_dot_crlf_ends_the_data(ending: bytes) -> None:
    smuggled = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nforged\r\n"
    stream = b"Subject: hi\r\n\r\nhello" + ending + smuggled + b".\r\nQUIT\r\n"
    content = read(stream)
    assert isinstance(content, bytes)
    assert smuggled in content  # the smuggled commands stay data, sent on as data


def test_too_much_is_answered_after_the_data_and_the_connection_goes_on() -> None:
    stream = b"z" * 998 + b"\r\n" + b"z" * 998 + b"\r\n" + b".\r\nQUIT\r\n"
    result, rest = asyncio.run(run(stream, [100, 900, 1500], 1500, 64 * 1024))
    assert result == TOO_MUCH
    assert rest == b"QUIT\r\n"


def test_a_large_message_arrives_whole() -> None:
    line = b"0123456789" * 7 + b"\r\n"
    body = line * 300_000  # 21 MB
    result, rest = asyncio.run(run(body + b".\r\nNOOP\r\n", [65536] * 20, None, 64 * 1024))
    assert result == body
    assert rest == b"NOOP\r\n"
