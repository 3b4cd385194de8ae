"""The SMTP session's own parts against aiosmtplib's: addresses on command lines, replies.

sendguard.delivery.smtp_session writes MAIL and RCPT and reads the replies itself (so it can
pipeline); what it writes and how it reads must stay what aiosmtplib writes and reads.
"""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, SMTPProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from sendguard.delivery.smtp_session import _Replies, mailbox


def aiosmtplib_mailbox(address: str, encoding: str) -> bytes | None:
    """What aiosmtplib puts after `FROM:` / `TO:`; None where it refuses the address."""
    try:
        quoted = quote_address(address).encode(encoding)
    except ValueError:  # UnicodeEncodeError included
        return None
    return None if COMMAND_INJECTION_REGEX.search(b"FROM:" + quoted) else quoted


def ours(address: str, encoding: str) -> bytes | None:
    try:
        return mailbox(address, encoding)
    except ValueError:
        return None


ADDRESSES = [
    "",
    "a@b",
    "Mixed.Case+tag@Example.org",
    "o'brien@example.ie",
    "x..y@example.org",
    ".x@example.org",
    "x.@example.org",
    "x@example..org",
    "x@-example.org",
    "x@[192.0.2.1]",
    '"quoted local"@example.org',
    "Name <a@example.org>",
    "<a@example.org>",
    "a@example.org>",
    "a b@example.org",
    "a@example.org\r\nRCPT TO:<b@example.org>",
    "a\x01@example.org",
    "ünï@example.org",
    "a@exämple.org",
    "a@b@c",
    "@example.org",
    "a@",
    "nodomain",
]


@pytest.mark.parametrize("address", ADDRESSES)
@pytest.mark.parametrize("encoding", ["ascii", "utf-8"])
def test_addresses_are_quoted_as_aiosmtplib_quotes_them(address: str, encoding: str) -> None:
    assert ours(address, encoding) == aiosmtplib_mailbox(address, encoding)


ADDRESS_CHARS = st.sampled_from(list("aZ09.@-_+'!#$%&*/=?^`{|}~\"\\()<>[],;: \t\r\n\x00\x7fü"))


@settings(max_examples=500, deadline=None)
@given(st.lists(ADDRESS_CHARS, max_size=30).map("".join), st.sampled_from(["ascii", "utf-8"]))
def test_any_address_is_quoted_or_refused_as_aiosmtplib_does(address: str, encoding: str) -> None:
    assert ours(address, encoding) == aiosmtplib_mailbox(address, encoding)


def aiosmtplib_replies(octets: bytes) -> list[tuple[int, str]]:
    """Every reply in `octets` as aiosmtplib's protocol parses them from its buffer."""
    protocol = SMTPProtocol(loop=asyncio.get_running_loop())
    protocol._buffer.extend(octets)
    replies = []
    while (reply := protocol._read_response_from_buffer()) is not None:
        replies.append((reply.code, reply.message))
    return replies


REPLY = st.one_of(
    st.tuples(
        st.integers(200, 599),
        st.lists(
            st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=20),
            min_size=1,
            max_size=4,
        ),
    )
)


def reply_octets(code: int, lines: list[str]) -> bytes:
    body = [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]
    return "".join(f"{line}\r\n" for line in body).encode()


@settings(max_examples=150, deadline=None)
@given(st.lists(REPLY, min_size=1, max_size=5), st.data())
async def test_replies_read_in_any_pieces_are_those_aiosmtplib_reads(
    replies: list[tuple[int, list[str]]], data: st.DataObject
) -> None:
    octets = b"".join(reply_octets(code, lines) for code, lines in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(octets)), max_size=6)))
    protocol = _Replies(asyncio.get_running_loop())
    for start, end in zip([0, *cuts], [*cuts, len(octets)], strict=True):
        protocol.data_received(octets[start:end])
    got = [(r.code, r.message) for r in [await protocol.next(1) for _ in replies]]
    assert got == aiosmtplib_replies(octets)
    assert not protocol.replies


async def test_a_malformed_reply_is_an_error_as_in_aiosmtplib() -> None:
    protocol = _Replies(asyncio.get_running_loop())
    protocol.data_received(b"250 Ok\r\nhello there\r\n")
    assert (await protocol.next(1)).code == 250
    with pytest.raises(aiosmtplib.SMTPResponseException, match="Malformed SMTP response"):
        await protocol.next(1)


async def test_no_reply_in_time_is_a_read_timeout() -> None:
    protocol = _Replies(asyncio.get_running_loop())
    protocol.data_received(b"250-first line of a reply that never ends\r\n")
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await protocol.next(0.05)


async def test_replies_that_came_before_the_connection_was_lost_are_read_first() -> None:
    protocol = _Replies(asyncio.get_running_loop())
    waiting = asyncio.create_task(protocol.next(5))
    await asyncio.sleep(0)
    protocol.data_received(b"421 4.4.2 closing\r\n")
    protocol.connection_lost(None)
    assert (await waiting).code == 421
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await protocol.next(5)
