"""AUTH is offered over TLS (STARTTLS or implicit), or in the clear to loopback clients only.

The e2e tests can only connect from loopback; here the real protocol object serves a peer that
is not on loopback (one end of a Unix socket pair), so the clear-text refusal is exercised.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from sendguard.config import ListenerOptions, SmtpOptions, TlsOptions
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


@pytest.fixture
async def implicit_tls_client(
    tmp_path: Path,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client off loopback on an implicit-TLS listener (TLS from the first byte)."""
    ca = trustme.CA()
    cert = ca.issue_cert("mail.example.com")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = SmtpOptions(
        auth_users={"crm": hash_password("pw")},
        allowed_networks=[],
        tls=TlsOptions(cert=tmp_path / "cert.pem", key=tmp_path / "key.pem"),
        listeners=[ListenerOptions(listen="127.0.0.1:1", tls="implicit", require_tls=True)],
    )
    handler = SmtpHandler(intake=None, config=config, metrics=None)  # type: ignore[arg-type]
    ingress = SmtpIngress(handler, config)
    assert ingress.certificates is not None
    server_end, client_end = socket.socketpair()
    loop = asyncio.get_running_loop()
    accepting = loop.create_task(
        loop.connect_accepted_socket(
            ingress._connection, server_end, ssl=ingress.certificates.context
        )
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    reader, writer = await asyncio.open_connection(
        sock=client_end, ssl=context, server_hostname="mail.example.com"
    )
    transport, _ = await accepting
    yield reader, writer
    writer.close()
    transport.close()
    await asyncio.sleep(0.01)


async def test_auth_is_offered_over_implicit_tls_off_loopback(
    implicit_tls_client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    reader, writer = implicit_tls_client
    assert (await reader.readline()).startswith(b"220")
    ehlo = await command(reader, writer, "EHLO client")
    assert "AUTH" in ehlo
    assert "STARTTLS" not in ehlo
    # require_tls is met from the first byte: MAIL is not refused for lack of STARTTLS.
    mail = await command(reader, writer, "MAIL FROM:<a@example.com>")
    assert mail.startswith("250")
    await command(reader, writer, "RSET")
    auth = await command(reader, writer, "AUTH PLAIN AGNybQBwdw==")
    assert auth.startswith("235"), auth
