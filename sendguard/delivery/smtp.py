"""The `smtp` upstream: relays through a smarthost or ESP with a pool of reused connections.

Replies map onto the upstream contract: 4xx and network trouble are transient, 5xx permanent.
A connection that saw any error is discarded, never returned to the pool; an idle connection
older than `idle_timeout` is closed rather than reused, since servers drop idle clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import aiosmtplib
import structlog

from sendguard.delivery.upstream import Envelope
from sendguard.errors import UpstreamError, UpstreamPermanent, UpstreamTransient

log = structlog.get_logger("sendguard.upstream.smtp")


def classify(code: int, text: str) -> UpstreamError:
    """The upstream error for an SMTP reply code."""
    if 500 <= code < 600:
        return UpstreamPermanent(f"{code} {text}".strip(), code=code)
    return UpstreamTransient(f"{code} {text}".strip(), code=code)


class SmtpUpstream:
    """Sends through an SMTP server with up to `pool_size` connections."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: str = "auto",
        tls_verify: bool = True,
        tls_ca: str | None = None,
        username: str | None = None,
        password: str | None = None,
        pool_size: int = 4,
        timeout: timedelta = timedelta(seconds=30),
        idle_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self._host = host
        self._port = port
        self._start_tls = {"auto": None, "always": True, "never": False}[starttls]
        self._tls_verify = tls_verify
        self._tls_ca = tls_ca
        self._username = username
        self._password = password
        self._timeout = timeout.total_seconds()
        self._idle_timeout = idle_timeout.total_seconds()
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            start_tls=self._start_tls,
            validate_certs=self._tls_verify,
            cert_bundle=self._tls_ca,
            username=self._username,
            password=self._password,
            timeout=self._timeout,
        )
        await client.connect()
        return client

    async def _take(self) -> aiosmtplib.SMTP:
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and time.monotonic() - since < self._idle_timeout:
                return client
            await self._discard(client)
        return await self._connect()

    @staticmethod
    async def _discard(client: aiosmtplib.SMTP) -> None:
        try:
            if client.is_connected:
                await client.quit(timeout=2)
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def send(self, envelope: Envelope, content: bytes) -> None:
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._take()
                await client.sendmail(envelope.mail_from, [envelope.recipient], content)
            except aiosmtplib.SMTPAuthenticationError as exc:
                # Our credentials, not the message, are wrong: keep the mail until the
                # operator fixes upstream.username/password, rather than fail it all.
                raise UpstreamTransient(
                    f"upstream refused our AUTH ({exc.code} {exc.message}); "
                    "check upstream.username and upstream.password"
                ) from exc
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                raise classify(refused.code, refused.message) from exc
            except aiosmtplib.SMTPResponseException as exc:
                raise classify(exc.code, exc.message) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise UpstreamTransient(
                    f"{self._host}:{self._port}: {type(exc).__name__}: {exc}"
                ) from exc
            except BaseException:
                if client is not None:  # cancelled mid-conversation: no polite QUIT
                    client.close()
                    client = None
                raise
            else:
                self._idle.append((client, time.monotonic()))
                client = None
            finally:
                if client is not None:
                    await self._discard(client)

    async def check(self) -> None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), timeout=self._timeout
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamTransient(f"cannot reach {self._host}:{self._port}: {exc}") from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._discard(client) for client, _ in idle))
