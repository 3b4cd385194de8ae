"""AUTH is offered over TLS, or in the clear to loopback clients only.

The e2e tests can only connect from loopback; here the real protocol object serves a peer that
is not on loopback (one end of a Unix socket pair), so the clear-text refusal is exercised.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sendguard.config import SmtpOptions
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.password import hash_password


@pytest.fixture
async def non_loopback_client(
    tmp_path: Path,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    config = SmtpOptions(auth_users={"crm": hash_password("pw")}, allowed_networks=[])
    handler = SmtpHandler(intake=None, config=config, metrics=None)  # type: ignore[arg-type]
    ingress = SmtpIngress(handler, config)
    server_end, client_end = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(ingress._connection, server_end)
    reader, writer = await asyncio.open_connection(sock=client_end)
    yield reader, writer
    writer.close()
    transport.close()
    await asyncio.sleep(0.01)


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> str:
    writer.write(line.encode() + b"\r\n")
    await writer.drain()
    lines = []
    while True:
        got = (await reader.readline()).decode()
        lines.append(got)
        if got[3:4] == " ":
            return "".join(lines)


async def test_auth_is_not_offered_in_the_clear_off_loopback(
    non_loopback_client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    reader, writer = non_loopback_client
    assert (await reader.readline()).startswith(b"220")
    ehlo = await command(reader, writer, "EHLO client")
    assert "AUTH" not in ehlo
    auth = await command(reader, writer, "AUTH PLAIN AGNybQBwdw==")
    assert auth.startswith("538 5.7.11")
    await command(reader, writer, "MAIL FROM:<a@example.com>")
    rcpt = await command(reader, writer, "RCPT TO:<b@example.org>")
    assert rcpt.startswith("530 5.7.0")
