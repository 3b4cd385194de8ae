"""What a connection costs before its first command: aiosmtpd's loop look-up, and its logging
of every command line.

The ingress tells each connection its loop (aiosmtpd would look it up under
`warnings.catch_warnings()` per connection), and aiosmtpd's command-line logging skips its
credential masking when its logger drops the records anyway; with the level enabled, the
records are aiosmtpd's own, AUTH credentials masked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiosmtpd.smtp
import pytest

from sendguard.config import SmtpOptions
from sendguard.ingress.smtp import _literal, _parse_ip
from tests.support.smtp_ingress import connected


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[bytes]:
    replies = []
    for line in (b"EHLO client.example", b"AUTH PLAIN c2VjcmV0", b"NOOP", b"QUIT"):
        writer.write(line + b"\r\n")
        while (reply := await asyncio.wait_for(reader.readline(), 5))[3:4] == b"-":
            pass
        replies.append(reply[:3])
    return replies


async def test_a_connection_is_told_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_look_up() -> Any:
        raise AssertionError("aiosmtpd looked the loop up for a connection")

    monkeypatch.setattr(aiosmtpd.smtp, "make_loop", no_look_up)
    async with connected(SmtpOptions()) as (ingress, reader, writer):
        (connection,) = ingress.connections
        assert connection.loop is asyncio.get_running_loop()
        # AUTH is not offered (no auth_users): 503, whatever its argument.
        assert await _session(reader, writer) == [b"250", b"503", b"250", b"221"]


def _counting_sanitize(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []
    sanitize = aiosmtpd.smtp.sanitize

    def counting(text: bytes) -> bytes:
        seen.append(text)
        return sanitize(text)

    monkeypatch.setattr(aiosmtpd.smtp, "sanitize", counting)
    return seen


async def test_command_lines_are_not_masked_for_a_logger_that_drops_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _counting_sanitize(monkeypatch)
    monkeypatch.setattr(logging.getLogger("mail.log"), "level", logging.WARNING)
    async with connected(SmtpOptions()) as (_, reader, writer):
        await _session(reader, writer)
    assert seen == []


async def test_command_lines_are_logged_masked_when_the_level_is_enabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen = _counting_sanitize(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="mail.log"):
        async with connected(SmtpOptions()) as (_, reader, writer):
            await _session(reader, writer)
    lines = [r.getMessage() for r in caplog.records if r.name == "mail.log"]
    assert any(">> b'EHLO client.example'" in line for line in lines), lines
    assert any("readline: b'NOOP\\r\\n'" in line for line in lines), lines
    auth = [line for line in lines if "AUTH PLAIN" in line]
    assert auth, lines
    assert all("c2VjcmV0" not in line and "********" in line for line in auth), auth
    assert seen  # aiosmtpd's own masking ran


def test_the_received_lines_address_literal_is_kept_per_address() -> None:
    assert _literal(_parse_ip("127.0.0.1")) == "[127.0.0.1]"
    assert _literal(_parse_ip("::ffff:10.0.0.1")) == "[10.0.0.1]"  # a mapped IPv4 client
    assert _literal(_parse_ip("2001:db8::1")) == "[IPv6:2001:db8::1]"
    assert _literal(_parse_ip("2001:db8::1")) is _literal(_parse_ip("2001:db8::1"))
