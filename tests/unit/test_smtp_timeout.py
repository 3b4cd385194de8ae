"""The idle timeout (`smtp.timeout`) and the DATA timeout (`smtp.data_timeout`) of a session.

Each command restarts the idle timer, and DATA has its own deadline for the whole message:
the real protocol on loopback, an intake that accepts at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from sendguard.config import SmtpOptions
from tests.support.smtp_ingress import connected

Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def session(timeout: float, data_timeout: float) -> AsyncIterator[Client]:
    config = SmtpOptions(
        timeout=timedelta(seconds=timeout), data_timeout=timedelta(seconds=data_timeout)
    )
    async with connected(config) as (_, reader, writer):
        yield reader, writer


async def command(client: Client, line: bytes) -> bytes:
    reader, writer = client
    writer.write(line + b"\r\n")
    return await asyncio.wait_for(reader.readline(), 5)


async def closing_words(client: Client, within: float) -> tuple[bytes, float]:
    """What the server says before it closes, and after how many seconds."""
    started = time.monotonic()
    said = await asyncio.wait_for(client[0].read(), within)
    return said, time.monotonic() - started


async def test_each_command_restarts_the_idle_timer() -> None:
    async with session(timeout=1.0, data_timeout=10.0) as client:
        for _ in range(5):  # 2 s in all, longer than the timeout, never 1 s idle
            await asyncio.sleep(0.4)
            assert (await command(client, b"NOOP")).startswith(b"250")
        said, after = await closing_words(client, 5)
    assert said.startswith(b"421 4.4.2"), said
    assert after > 0.8, after  # a full second after the last command, not the first timer


async def test_a_data_timeout_longer_than_the_idle_timeout_holds_for_the_data() -> None:
    async with session(timeout=1.0, data_timeout=4.0) as client:
        assert (await command(client, b"HELO client.example")).startswith(b"250")
        assert (await command(client, b"MAIL FROM:<shop@example.com>")).startswith(b"250")
        assert (await command(client, b"RCPT TO:<ann@example.org>")).startswith(b"250")
        assert (await command(client, b"DATA")).startswith(b"354")
        await asyncio.sleep(1.6)  # idle past `timeout`, within `data_timeout`
        reply = await command(client, b"Subject: slow\r\n\r\nbody\r\n.")
        assert reply.startswith(b"250"), reply
        said, after = await closing_words(client, 5)  # idle again: `timeout` once more
    assert said.startswith(b"421 4.4.2"), said
    assert 0.8 < after < 3.0, after


async def test_a_data_timeout_shorter_than_the_idle_timeout_cuts_the_data_off() -> None:
    async with session(timeout=30.0, data_timeout=1.0) as client:
        assert (await command(client, b"HELO client.example")).startswith(b"250")
        assert (await command(client, b"MAIL FROM:<shop@example.com>")).startswith(b"250")
        assert (await command(client, b"RCPT TO:<ann@example.org>")).startswith(b"250")
        assert (await command(client, b"DATA")).startswith(b"354")
        client[1].write(b"Subject: slow\r\n\r\n")
        said, after = await closing_words(client, 10)
    assert said.startswith(b"421 4.4.2"), said
    assert after < 5.0, after
