"""The `smtp` upstream: relays through a smarthost or ESP with a pool of reused connections.

Replies map onto the upstream contract: 4xx and network trouble are transient, 5xx permanent.
A connection that saw any error is discarded, never returned to the pool; an idle connection
older than `idle_timeout` is closed rather than reused, since servers drop idle clients.

SMTPUTF8 and BODY=8BITMIME are passed on when the client used them and the upstream offers
them. When it does not, the delivery fails with that reason: RFC 6531 allows no downgrade of
UTF-8 addresses, and re-encoding an 8-bit body (RFC 6152) would break DKIM signatures.

`tls: implicit` speaks TLS from the first byte (port 465, RFC 8314), verified like STARTTLS.

aiosmtplib opens each connection (TLS, AUTH, EHLO); the mail transactions on it are
`smtp_session`'s: with PIPELINING when the upstream offers it, each message's DATA form built
by `smtp_data` (a large one in pieces, with the loop free between them).

Readiness asks the upstream for its EHLO greeting (with TLS and AUTH when configured),
and counts any send the upstream accepted within READY_FOR as an answer; a send that could not
reach it (network trouble) forgets that answer, so the next probe asks again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiosmtplib
import structlog

from sendguard.delivery.smtp_data import encode
from sendguard.delivery.smtp_session import Session
from sendguard.delivery.upstream import Envelope
from sendguard.errors import UpstreamError, UpstreamPermanent, UpstreamTransient

log = structlog.get_logger("sendguard.upstream.smtp")

READY_FOR = 5.0
"""Seconds an upstream answer (a probe or an accepted send) counts for readiness."""
PROBE_TIMEOUT = 5.0
"""The longest a readiness probe waits for the upstream (probes themselves time out fast)."""


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
        implicit_tls: bool = False,
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
        # TLS from the first byte (port 465) leaves nothing for STARTTLS to upgrade.
        self._implicit_tls = implicit_tls
        self._start_tls = (
            False if implicit_tls else {"auto": None, "always": True, "never": False}[starttls]
        )
        self._tls_verify = tls_verify
        self._tls_ca = tls_ca
        self._username = username
        self._password = password
        self._timeout = timeout.total_seconds()
        self._idle_timeout = idle_timeout.total_seconds()
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[tuple[Session, float]] = []
        self._answered_at: float | None = None
        self._probing = asyncio.Lock()

    def _where(self) -> str:
        return f"upstream {self._host}:{self._port}"

    def _mail_options(self, session: Session, envelope: Envelope) -> list[str]:
        """MAIL FROM parameters for this message; UpstreamPermanent if the upstream lacks one."""
        options = []
        addresses = envelope.mail_from + envelope.recipient
        if envelope.smtputf8 or not addresses.isascii():
            if not session.supports("smtputf8"):
                # sendguard refuses to relay it: the upstream never saw the message.
                raise UpstreamPermanent(
                    f"cannot relay: the upstream does not offer SMTPUTF8 ({self._where()}),"
                    " and the message needs it (UTF-8 addresses or headers); it cannot be"
                    " downgraded (RFC 6531)"
                )
            options.append("SMTPUTF8")
        if envelope.body_8bit:
            if not session.supports("8bitmime"):
                raise UpstreamPermanent(
                    f"cannot relay: the upstream does not offer 8BITMIME ({self._where()}),"
                    " and the message has an 8-bit body (RFC 6152); send it quoted-printable"
                    " or base64 encoded"
                )
            options.append("BODY=8BITMIME")
        return options

    def _translate(self, exc: Exception) -> UpstreamError:
        """The upstream error for what aiosmtplib (or the network) raised."""
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            # Our credentials, not the message, are wrong: keep the mail until the
            # operator fixes upstream.username/password, rather than fail it all.
            return UpstreamTransient(
                f"upstream refused our AUTH ({exc.code} {exc.message}); "
                "check upstream.username and upstream.password"
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return classify(exc.code, exc.message)
        if isinstance(exc, aiosmtplib.SMTPException | OSError):  # TLS errors are ValueErrors too
            return UpstreamTransient(f"{self._host}:{self._port}: {type(exc).__name__}: {exc}")
        # A ValueError or UnicodeError: an address aiosmtplib cannot put on a command line.
        return UpstreamPermanent(f"cannot send to {self._where()}: {type(exc).__name__}: {exc}")

    async def _connect(self) -> Session:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._implicit_tls,
            start_tls=self._start_tls,
            validate_certs=self._tls_verify,
            cert_bundle=self._tls_ca,
            username=self._username,
            password=self._password,
            timeout=self._timeout,
        )
        await client.connect()
        try:
            if client.is_ehlo_or_helo_needed:  # the extensions decide the MAIL FROM parameters
                await client.ehlo()
            return Session(client)
        except BaseException:
            client.close()
            raise

    async def _take(self) -> Session:
        while self._idle:
            session, since = self._idle.pop()
            if session.usable and time.monotonic() - since < self._idle_timeout:
                return session
            await self._discard(session)
        return await self._connect()

    @staticmethod
    async def _discard(session: Session) -> None:
        await session.quit(2)

    async def send(self, envelope: Envelope, content: bytes) -> None:
        async with self._slots:
            session: Session | None = None
            reusable = False
            try:
                session = await self._take()
                options = self._mail_options(session, envelope)
                pieces, size = await encode(content)
                if session.supports("size"):
                    options.insert(0, f"size={size}")
                await session.send(
                    envelope.mail_from,
                    envelope.recipient,
                    pieces,
                    options,
                    seconds=self._timeout,
                )
            except UpstreamError:
                reusable = True  # refused before MAIL FROM: the connection is still good
                raise
            except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
                if isinstance(exc, (OSError, TimeoutError, aiosmtplib.SMTPConnectError)):
                    self._answered_at = None  # unreachable now: readiness must ask again
                raise self._translate(exc) from exc
            except BaseException:
                if session is not None:  # cancelled mid-conversation: no polite QUIT
                    session.close()
                    session = None
                raise
            else:
                self._answered_at = time.monotonic()
                self._idle.append((session, time.monotonic()))
                session = None
            finally:
                if session is not None:
                    if reusable and session.usable:
                        self._idle.append((session, time.monotonic()))
                    else:
                        await self._discard(session)

    def _answered_recently(self) -> bool:
        return self._answered_at is not None and time.monotonic() - self._answered_at < READY_FOR

    async def check(self) -> None:
        if self._answered_recently():
            return
        async with self._probing:  # concurrent probes share one connection
            if self._answered_recently():
                return
            try:
                session = await asyncio.wait_for(
                    self._connect(), timeout=min(self._timeout, PROBE_TIMEOUT)
                )
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise UpstreamTransient(
                    f"{self._where()} did not answer EHLO: {type(exc).__name__}: {exc}"
                ) from exc
            self._answered_at = time.monotonic()
            await self._discard(session)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._discard(session) for session, _ in idle))
