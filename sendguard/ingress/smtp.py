"""The SMTP ingress: an aiosmtpd handler that only turns an envelope into an Intake call.

Replies (DESIGN.md "SMTP replies"): `250 2.0.0 Ok: queued as <id>` after the commit;
`451 4.3.0` when the store fails; `552 5.3.4` over `max_message_size`; relaying only from
`allowed_networks` or after AUTH, and AUTH only over TLS or from loopback; malformed addresses
refused (501/553), never rewritten; `452 4.5.3` past `max_recipients`.

One process may listen on several addresses (`smtp.listeners`), each with its own TLS mode
(none, STARTTLS, implicit from the first byte), AUTH and TLS requirements and networks; every
connection knows its `Listener`. The certificate is shared and replaced on a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from pathlib import Path
from types import MethodType
from typing import Any, AnyStr

import aiosmtpd.smtp
import structlog
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    _AuthMechAttr,
    syntax,
)

from sendguard.address import needs_smtputf8, validate_address
from sendguard.clock import monotonic
from sendguard.config import Listener, SmtpOptions, TlsOptions, split_listen
from sendguard.connection_counts import ConnectionCounts
from sendguard.errors import ConfigError, InvalidAddress, InvalidMessage, StoreUnavailable
from sendguard.headers import Trace
from sendguard.ingress.smtp_auth import CONNECTION_LIMIT_REPLY, REFUSAL_PAUSE, AuthGuard
from sendguard.ingress.smtp_data import READ_LIMIT, DataRefused, read_data
from sendguard.ingress.smtp_params import read_parameters
from sendguard.ingress.smtp_replies import CODED, enhanced, reply_text
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.offload import LARGE
from sendguard.resend import is_resend
from sendguard.thread_turns import prompt_turns
from sendguard.tls import CertificateError, Certificates

log = structlog.get_logger("sendguard.smtp")

_aiosmtpd_sanitized_log = aiosmtpd.smtp.sanitized_log
_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


def _sanitized_log(func: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's `sanitized_log`, which its command loop calls twice for every command line
    (at `debug` and `info`), skipped when its logger would drop the record anyway: it matches
    each bytes argument against a regular expression (to mask AUTH credentials) before the
    logger looks at its level, and `serve` keeps aiosmtpd's logger at `warning` unless the
    log level is `debug` (sendguard.logs). When the level is enabled, aiosmtpd's own runs."""
    logger = getattr(func, "__self__", None)
    level = _METHOD_LEVELS.get(getattr(func, "__name__", ""))
    if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
        return
    _aiosmtpd_sanitized_log(func, msg, *args, **kwargs)


# aiosmtpd's command loop looks the name up in its module at every call.
aiosmtpd.smtp.sanitized_log = _sanitized_log


def _peer_ip(session: Session) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return _ip_of(session.peer)


def _ip_of(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(peer, tuple) and peer:
        return _parse_ip(peer[0])
    return None


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a peer's host text names (None: not an IP address). Kept for the clients
    seen last: ipaddress parses in Python (some 20,000 instructions for `127.0.0.1`), once per
    connection, and a relay's clients are few. Addresses are immutable values."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _literal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """The address literal of the `Received:` line: formatting an address runs ipaddress's
    Python (some 8,000 instructions) for every message; a relay's clients are few."""
    return f"[IPv6:{ip}]" if isinstance(ip, ipaddress.IPv6Address) else f"[{ip}]"


def raw_path(arg: str | None, keyword: str) -> str | None:
    """The address text of a MAIL FROM/RCPT TO argument exactly as the client sent it.

    aiosmtpd parses the path with the RFC 5322 header parser, which reads `<bad address@x>`
    as an obsolete local part and hands on `"bad address"@x`: a rewrite. Validating this text
    instead refuses what the client actually wrote. None when there is no argument to read
    (aiosmtpd answers the syntax error itself).
    """
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return _path_text(arg[len(keyword) :].strip())


def _path_text(text: str) -> str:
    """The address text of a path argument after its keyword (stripped), as sent."""
    if not text.startswith("<"):
        return text.split(None, 1)[0] if text else ""
    closing = _closing(text)
    return text[1:] if closing is None else text[1:closing]


def _closing(text: str) -> int | None:
    """Where the `>` closing the `<` that `text` starts with is (None: it is never closed)."""
    quoted = escaped = False
    for index, char in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return None


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_PATH = re.compile(
    rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@{_ATEXT}+(?:\.{_ATEXT}+)*)>(?:[ \t]+([^( \t].*))?"
)
"""A path as nearly every client writes it: `<dot-atom@dot-atom>` in ASCII atext, then
nothing or blanks and parameters. The `email` header parser reads it as exactly this address
and these parameters (and the address text as sent is the same); tests/unit/test_smtp_paths.py
compares both over generated arguments. Anything else goes through the parser."""


def _utf8_refusal(kind: str) -> str:
    # RFC 6531 3.5: a non-ASCII address in a transaction that did not declare SMTPUTF8.
    return f"553 5.6.7 Non-ASCII {kind} address needs SMTPUTF8 on MAIL FROM (RFC 6531)"


def _trace(session: Session, envelope: Envelope, server: SMTP) -> Trace:
    """The client's EHLO name and address, and the protocol as RFC 3848/6531 name it."""
    literal = _literal(_client_ip(server, session))
    helo = _TRACE_UNSAFE.sub("?", session.host_name or "unknown")[:100]
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    if envelope.smtp_utf8:
        protocol = "UTF8SMTP"
    if protocol != "SMTP":
        protocol += ("S" if session.ssl is not None else "") + (
            "A" if session.authenticated else ""
        )
    return Trace(f"{helo} ({literal})", protocol)


_TRACE_UNSAFE = re.compile(r"[^\x21-\x27\x2a-\x7e]")
"""Not printable ASCII, blanks and parentheses: the EHLO name may not shape the header."""


def _hooks(cls: type, prefixes: tuple[str, ...]) -> list[str]:
    return [name for name in dir(cls) if name.startswith(prefixes)]


class SmtpHandler:
    """The aiosmtpd handler: checks each command's arguments and hands DATA to Intake."""

    # aiosmtpd finds hooks by listing the handler's attributes (dir, inspect.getmembers) on
    # every connection, a large share of the CPU with one message per connection. Listing
    # only the names it looks for, computed once per class, keeps the same hooks.
    def __dir__(self) -> list[str]:
        return _HANDLER_NAMES

    def __init__(self, intake: Intake, config: SmtpOptions, metrics: Metrics) -> None:
        self._intake = intake
        self._config = config
        self._metrics = metrics
        self._listener = config.listeners_in_use()[0]
        self.in_flight = 0

    def _may_relay(self, server: SMTP, session: Session) -> bool:
        if session.authenticated:
            return True
        listener = server.listener if isinstance(server, _Connection) else self._listener
        if listener.require_auth:
            return False
        ip = _client_ip(server, session)
        return ip is not None and any(ip in net for net in listener.allowed_networks)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        sent = _sent_path(server, address)
        if sent:
            if needs_smtputf8(sent) and "SMTPUTF8" not in mail_options:
                return _utf8_refusal("sender")
            try:
                validate_address(sent)
            except InvalidAddress as exc:
                return f"553 5.1.7 Bad sender address: {reply_text(str(exc))}"
            address = sent
        else:
            address = "<>"
        # aiosmtpd reads an empty mail_from as "no MAIL yet" (503 to RCPT): the null
        # reverse-path stays "<>" in the envelope and becomes "" only when handed to Intake.
        envelope.mail_from = address or "<>"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._may_relay(server, session):
            log.warning(
                "smtp relay refused",
                ip=str(_peer_ip(session)),
                recipient=reply_text(address, 254),
                reason="not authenticated and not in smtp.allowed_networks",
            )
            if self._config.auth_users:
                return "530 5.7.0 Authentication required"
            return "554 5.7.1 Relay access denied: this client is not in smtp.allowed_networks"
        if len(envelope.rcpt_tos) >= self._config.max_recipients:
            self._refused(session, address, "too many recipients")
            return f"452 4.5.3 Too many recipients (at most {self._config.max_recipients})"
        address = _sent_path(server, address)
        if address.lower() == "postmaster":
            qualified = self._postmaster()
            if qualified is None:
                self._refused(session, address, "postmaster without a domain, no smtp.hostname")
                return (
                    "550 5.1.1 <postmaster> needs a domain to be relayed: set smtp.hostname"
                    " (it becomes postmaster@<smtp.hostname>) or write the full address"
                )
            address = qualified
        if needs_smtputf8(address) and not envelope.smtp_utf8:
            self._refused(session, address, "non-ASCII address without SMTPUTF8")
            return _utf8_refusal("recipient")
        try:
            validate_address(address)
        except InvalidAddress as exc:
            self._refused(session, address, str(exc))
            return f"553 5.1.3 Bad recipient address: {reply_text(str(exc))}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    def _postmaster(self) -> str | None:
        """Where `RCPT TO:<Postmaster>` (no domain, RFC 5321 4.5.1) goes: the postmaster of
        the host the client talked to, `postmaster@<smtp.hostname>`. Only a configured name:
        the machine's own FQDN is often no mail domain, and a relay must pass it on."""
        hostname = self._config.hostname
        return None if hostname is None else f"postmaster@{hostname}"

    @staticmethod
    def _refused(session: Session, address: str, reason: str) -> None:
        log.info(
            "smtp recipient refused",
            ip=str(_peer_ip(session)),
            recipient=reply_text(address, 254),
            reason=reason,
        )

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = monotonic()
        self.in_flight += 1
        try:
            return await self._accept(envelope, _trace(session, envelope, server))
        finally:
            self.in_flight -= 1
            # `kept`: `labels()` checks and looks its values up under a lock on every call.
            timer = self._metrics.kept(self._metrics.ingress_duration, "smtp")
            timer.observe(monotonic() - started)
            structlog.contextvars.unbind_contextvars("message_id")

    async def _accept(self, envelope: Envelope, trace: Trace) -> str:
        content = envelope.original_content or b""
        try:
            accepted = await self._intake.accept(
                content,
                "" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                envelope.rcpt_tos,
                "smtp",
                smtputf8=envelope.smtp_utf8,
                body_8bit="BODY=8BITMIME" in envelope.mail_options,
                trace=trace,
                resend=True,
            )
        except InvalidAddress as exc:
            return f"553 5.1.3 {reply_text(str(exc))}"
        except InvalidMessage as exc:
            return f"550 5.6.0 {reply_text(str(exc))}"
        except StoreUnavailable as exc:
            log.warning("store unavailable; message refused with 451", error=str(exc))
            return "451 4.3.0 Temporary failure: the store is unavailable, try again later"
        # A retransmission is answered 250 whatever `reject_dropped` says: its first copy was
        # accepted, and the client must stop sending it, not mark it failed.
        if (
            accepted.all_dropped
            and self._config.reject_dropped
            and not any(is_resend(d.decision) for d in accepted.deliveries)
        ):
            reason = accepted.deliveries[0].reason
            return f"550 5.7.1 Message dropped by policy: {reply_text(reason)}"
        return f"250 2.0.0 Ok: queued as {accepted.message.id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp session failed", exc_info=error)
        return "451 4.3.0 Temporary failure, try again later"


_HANDLER_NAMES = _hooks(SmtpHandler, ("handle_", "auth_"))


def _client_ip(
    server: SMTP, session: Session
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address: read once per connection by _Connection."""
    return server.ip if isinstance(server, _Connection) else _peer_ip(session)


def _sent_path(server: SMTP, parsed: str) -> str:
    """What the client wrote for the address aiosmtpd parsed as `parsed` ("" for `<>`)."""
    if isinstance(server, _Connection) and server.path_sent is not None:
        return server.path_sent
    return "" if parsed == "<>" else parsed


class _Session(Session):
    """aiosmtpd's session without the deprecated `login_data` warning.

    aiosmtpd itself stores the login there after every successful AUTH, and the property
    logs a deprecation warning each time. Nothing in sendguard reads it (the identity is
    `auth_data`), so here it is a plain attribute: no warning on every AUTH.
    """

    login_data: Any = None


class _Connection(SMTP):
    """aiosmtpd's protocol, with our replies and per-connection AUTH and drain bookkeeping."""

    # aiosmtpd sizes the stream buffer by this; its own DATA reader, which also took it for the
    # longest line, is replaced below (smtp_DATA) by one that checks RFC 5321's line length
    # itself and reads in pieces as large as the buffer. Command lines keep their own limits.
    line_length_limit = READ_LIMIT

    def __dir__(self) -> list[str]:
        # See SmtpHandler.__dir__; and nothing while aiosmtpd's __init__ runs (see __init__).
        return _CONNECTION_NAMES if self._listed else []

    def __init__(
        self, server: SmtpIngress, handler: SmtpHandler, listener: Listener, **kwargs: Any
    ) -> None:
        # aiosmtpd's __init__ builds its tables of commands, handler hooks and AUTH mechanisms
        # by listing this object and the handler (dir, inspect.getmembers) on every
        # connection. Here it lists nothing, and the same tables come from lists made once:
        # the commands and mechanisms of the class, bound to this connection, and the
        # handler's hooks, bound once by SmtpIngress (tests/unit/test_smtp_tables.py compares
        # them with aiosmtpd's own). The rest of what its __init__ sets is the same for every
        # connection of a listener: it runs once (`SmtpIngress._settings`), and a connection
        # gets a copy of its result and its own stream reader and protocol state, which
        # aiosmtpd's __init__ would make (asyncio.StreamReaderProtocol.__init__).
        self._listed = False
        settings = server._settings(kwargs)
        if settings is None:
            super().__init__(_NOTHING_TO_LIST, **kwargs)
        else:
            loop = kwargs["loop"]
            asyncio.StreamReaderProtocol.__init__(
                self,
                asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
                client_connected_cb=self._cb_client_connected,
                loop=loop,
            )
            self.__dict__.update(settings)
            # aiosmtpd's quirk, kept: a class-wide table that each new connection clears.
            self.command_size_limits.clear()
        self._listed = True
        self.event_handler = handler
        self._handle_hooks = server.hooks
        # aiosmtpd declares a dict; it only looks commands up (get) and lists them (items).
        self._smtp_methods = _BoundCommands(self)  # type: ignore[assignment]
        self._auth_methods = {
            **{name: _AuthMechAttr(MethodType(method, self), True) for name, method in _MECHANISMS},
            **server.mechanisms,
        }
        self._owner = server
        self.listener = listener
        self.ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        """The client's address, read once when it connects (None: not an IP peer)."""
        self._auth_failures = 0
        self._admitted = False
        self._credentials: LoginPassword | None = None
        self.path_sent: str | None = None
        """The address text of the MAIL or RCPT command being handled, as the client sent it."""
        self._collecting: list[str] | None = None
        self._parameters: Sequence[str] = ()  # see _getaddr
        self._in_mail = False
        self._deadline = self._timer_at = 0.0  # see _reset_timeout
        self._may_hold = False  # see _reply
        self._held: list[bytes] = []
        self._encoding = "utf-8" if self.enable_SMTPUTF8 else "ascii"  # as aiosmtpd's push

    @property
    def encrypted(self) -> bool:
        """True once the session runs over TLS (after STARTTLS, or from the first byte)."""
        return self._tls_protocol is not None or self.listener.tls == "implicit"

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd writes each line of its EHLO reply with a write (a system call) and a drain
        # of its own: the reply is collected here and written at once, the same octets. And no
        # handle_EHLO hook: aiosmtpd inspects a hook's signature on every connection.
        lines: list[str] = []
        self._collecting = lines
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._collecting = None
        if not self._owner.offers_auth:
            lines = [line for line in lines if not line.startswith("250-AUTH")]
        if len(lines) > 1:  # a greeting, not a refusal: RFC 2920 command pipelining (see push)
            lines.insert(-1, "250-PIPELINING")
            lines.insert(-1, "250-ENHANCEDSTATUSCODES")  # RFC 2034 (see push)
        if len(lines) == 1:
            # A refusal (`501 Syntax: EHLO hostname` for a bare EHLO): RFC 2034 3 frees only
            # the greeting from an enhanced code, and Postfix and the bare HELO's carry one.
            await self.push(lines[0])
        elif lines:
            await self._reply("\r\n".join(lines))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's own (`arg` is the path after FROM:/TO:), without the typing.Protocol class
        # it defines on every call, and without the header parser for a plain `<a@b.c>`. It
        # also keeps the address text as sent (path_sent) for handle_MAIL/handle_RCPT.
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is not None:
            addr: str = plain[1]
            rest: str = plain[2] or ""
            self.path_sent = addr
        else:
            self.path_sent = _path_text(arg)
            if not arg:
                return "", ""
            closing = _closing(arg) if arg.startswith("<") else None
            if closing is not None and self.path_sent.lower() == "postmaster":
                # RFC 5321 4.5.1: <Postmaster> without a domain; handle_RCPT qualifies it.
                self._parameters = arg[closing + 1 :].split()
                return self.path_sent, arg[closing + 1 :]
            if arg.startswith("<") and _closing(arg) is None:
                # `<a@b` without its `>`: the header parser reads the address all the same,
                # and it was taken. An empty address is aiosmtpd's 501 syntax error.
                return "", ""
            try:
                parsed = get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
            except HeaderParseError:
                return None, None
            address, rest = parsed
            addr = address.addr_spec
        self._parameters = rest.split()  # as sent, for a 555 to name (aiosmtpd upper-cases them)
        localpart, _, _ = addr.rpartition("@")
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        # aiosmtpd's, with RFC 5321's grammar and AUTH= on MAIL (sendguard/ingress/smtp_params.py).
        return read_parameters(params, auth=self._in_mail and self._owner.offers_auth)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")  # for HELP, as aiosmtpd's
    async def smtp_MAIL(self, arg: str | None) -> None:
        self._may_hold = self._in_mail = True
        try:
            if self.listener.require_tls and not self.encrypted:
                log.info("smtp mail refused: tls required", ip=str(self.ip))
                await self.push("530 5.7.0 Must issue a STARTTLS command first")
                return
            self.path_sent = None  # set by _getaddr, which reads the path
            await super().smtp_MAIL(arg)
        finally:
            self._may_hold = self._in_mail = False

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        self._may_hold = True
        try:
            self.path_sent = None
            await super().smtp_RCPT(arg)
        finally:
            self._may_hold = False

    @syntax("RSET")
    async def smtp_RSET(self, arg: str) -> None:
        self._may_hold = True
        try:
            await super().smtp_RSET(arg)
        finally:
            self._may_hold = False

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's smtp_DATA, with the data read in pieces (sendguard/ingress/smtp_data.py).
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # aiosmtpd restarts its idle timer per command, not per piece of data: from here to
        # the final dot, `smtp.data_timeout` bounds the whole message (a trickling client).
        self._reset_timeout(self._owner.data_timeout)
        try:
            content = await read_data(self._reader, self.data_size_limit)
        except (asyncio.CancelledError, asyncio.IncompleteReadError):
            # The connection closed in the middle of the data: nothing to answer.
            self._writer.close()
            raise
        self._reset_timeout()
        if isinstance(content, DataRefused):
            reply = content.reply
        else:
            self.envelope.content = self.envelope.original_content = content
            # A large message's intake works through it on the loop (and commits it in pieces
            # on the writer's thread): the other threads get the GIL promptly meanwhile.
            large = len(content) > LARGE
            with prompt_turns() if large else contextlib.nullcontext():
                status = await self._call_handler_hook("DATA")
            reply = "250 OK" if status is MISSING else status
        self._end_transaction()
        # The end of data may come with the next commands (RFC 2920 lets it start a group).
        self._may_hold = True
        try:
            await self.push(reply)
        finally:
            self._may_hold = False

    def _end_transaction(self) -> None:
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd is untyped here

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting = self.transport is None
        if starting:
            self.ip = ip = _ip_of(transport.get_extra_info("peername"))
            if not self._owner.counts.admit(ip):
                # Refused before aiosmtpd sees the connection: no session, no greeting task.
                log.warning("smtp connection refused: too many connections", ip=str(ip))
                _say(transport, TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._admitted = True
        super().connection_made(transport)
        if starting:
            self._owner.connections.add(self)
            assert self.session is not None
            if self.listener.tls == "implicit":
                # aiosmtpd knows TLS only from its own STARTTLS; tell it (and the Received:
                # header) that this session is encrypted from the first byte.
                self.session.ssl = {
                    name: transport.get_extra_info(name)
                    for name in ("ssl_object", "peercert", "cipher", "compression")
                }
                self._auth_require_tls = False
            else:
                # AUTH is offered over TLS, or in the clear only to loopback clients (never
                # in the clear where the listener requires TLS).
                loopback = self.ip is not None and self.ip.is_loopback
                self._auth_require_tls = self.listener.require_tls or not loopback

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels its timer and starts another on every command (a timer object and
        # a push onto the loop's heap each, 7 or 8 times a message). Here only the deadline
        # moves; the timer already running, when it fires before the deadline, waits on for
        # the rest. A deadline earlier than that timer's starts a new one.
        loop = self.loop
        self._deadline = deadline = loop.time() + (duration or self._timeout_duration)
        if self._timeout_handle is None or deadline < self._timer_at:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._timer_at = deadline
            self._timeout_handle = loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        if self._deadline > self._timer_at:  # the deadline moved since this timer started
            self._timer_at = self._deadline
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        if self.transport is None:
            return  # the connection ended as the timer fired
        # aiosmtpd closes silently; RFC 5321 4.2.2 lets the server say why first.
        _say(self.transport, self._unsent() + b"421 4.4.2 Timeout exceeded, closing connection\r\n")
        log.info("smtp session timed out", ip=str(self.ip))
        self.transport.close()

    @property
    def _auth_offered(self) -> bool:
        """Whether EHLO offers AUTH on this connection, so HELP lists it (see smtp_EHLO)."""
        return self._owner.offers_auth and not (
            self._auth_require_tls and self._tls_protocol is None
        )

    @syntax("AUTH <mechanism>", when="_auth_offered")
    async def smtp_AUTH(self, arg: str) -> None:
        if not self._owner.offers_auth:
            # EHLO does not offer AUTH (no smtp.auth_users): there are no credentials to be
            # wrong, and aiosmtpd's `535 Authentication credentials invalid` (counted as a
            # failure towards the refusals) told the client its password was. As Postfix.
            await self.push("503 5.5.1 Error: authentication not enabled")
            return
        refusal = self._owner.auth.refusal(self.ip, self._auth_failures)
        if refusal is None:
            await super().smtp_AUTH(arg)
            return
        log.warning("smtp auth refused: too many failures", ip=str(self.ip), reply=refusal[:3])
        await asyncio.sleep(REFUSAL_PAUSE)
        await self.push(refusal)
        if refusal == CONNECTION_LIMIT_REPLY and self.transport is not None:
            self.transport.close()

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd calls this synchronously, on the loop; the scrypt check must not run
        # there. Keep the credentials for auth_PLAIN/auth_LOGIN to check in a thread.
        self._credentials = auth_data if isinstance(auth_data, LoginPassword) else None
        return _CHECK_LATER

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked("LOGIN", await super().auth_LOGIN(_, args))

    async def _checked(self, mechanism: str, result: AuthResult) -> AuthResult:
        if result is not _CHECK_LATER:
            return result  # malformed or aborted: aiosmtpd has answered already
        credentials, self._credentials = self._credentials, None
        name = ""
        if credentials is not None:
            name = credentials.login.decode("utf-8", errors="replace")
            password = credentials.password.decode("utf-8", errors="replace")
            if await self._owner.auth.verify(name, password):
                log.info("smtp auth succeeded", ip=str(self.ip), user=name)
                return AuthResult(success=True, auth_data=name)
        self._auth_failures += 1
        from_address = self._owner.auth.failed(self.ip)
        log.warning(
            "smtp auth failed",
            ip=str(self.ip),
            user=reply_text(name, 100),
            mechanism=mechanism,
            failures_on_connection=self._auth_failures,
            failures_from_address=from_address,
        )
        return AuthResult(success=False, handled=False)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return  # refused in connection_made: aiosmtpd never started on it
        self._admitted = False
        self._owner.counts.release(self.ip)
        self._owner.connections.discard(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        if self._collecting is not None and isinstance(status, str):
            self._collecting.append(status)  # a line of the EHLO reply (smtp_EHLO writes it)
            return
        if isinstance(status, str) and status[4:6] not in CODED:
            # aiosmtpd's own replies lack the enhanced status code EHLO promises.
            status = enhanced(status, self.hostname, self._parameters)
        await self._reply(status)

    async def _reply(self, status: str | bytes) -> None:
        """Send a reply (aiosmtpd's push), or hold it to send with the next one.

        RFC 2920: a client that pipelines sends a group of commands (any number of RSET, MAIL
        and RCPT, then DATA, or the end of a message's data and the next commands) and reads
        the replies when it has sent the group. A reply to MAIL, RCPT, RSET or to the end of
        data is held while the next command line has arrived already: the loop goes on to it
        at once, without waiting for the client, and its reply carries the held ones in the
        same write (one system call, one wake-up of the client, instead of one per command).
        Every other reply (EHLO, DATA's 354, AUTH, STARTTLS, QUIT, errors of the loop) and any
        reply with nothing more to read sends what is held, so a client never waits for a
        reply the server holds.
        """
        data = status if isinstance(status, bytes) else bytes(status, self._encoding)
        # The stream's own buffer: aiosmtpd reads it the same way (connection_made).
        if self._may_hold and b"\n" in self._reader._buffer:  # type: ignore[attr-defined]
            self._held.append(data + b"\r\n")
            return
        if self._held:
            data = b"".join(self._held) + data
            self._held.clear()
        self._writer.write(data + b"\r\n")
        await self._writer.drain()

    def _unsent(self) -> bytes:
        """The replies held (see _reply), taken to be written before a last word."""
        held = b"".join(self._held)
        self._held.clear()
        return held


def _say(transport: asyncio.BaseTransport, line: bytes) -> None:
    """Write a last reply before closing. uvloop's transports are not asyncio.WriteTransport
    instances, so an isinstance check would silently skip the reply under `serve`'s uvloop."""
    write = getattr(transport, "write", None)
    if callable(write):
        write(line)


_CONNECTION_NAMES = _hooks(_Connection, ("smtp_", "auth_"))
_COMMANDS = {name[5:]: getattr(_Connection, name) for name in _hooks(_Connection, ("smtp_",))}
"""aiosmtpd's `_smtp_methods` of every connection, unbound: command -> function."""


class _BoundCommands(Mapping[str, Any]):
    """aiosmtpd's `_smtp_methods` of one connection (command -> bound method), each method
    bound when it is looked up: a session uses six of the twenty-odd commands, and binding
    them all for every connection cost more than the look-ups do."""

    __slots__ = ("_owner",)

    def __init__(self, owner: _Connection) -> None:
        self._owner = owner

    def __getitem__(self, command: str) -> Any:
        return MethodType(_COMMANDS[command], self._owner)

    def get(self, command: str, default: Any = None) -> Any:
        function = _COMMANDS.get(command)
        return default if function is None else MethodType(function, self._owner)

    def __iter__(self) -> Iterator[str]:
        return iter(_COMMANDS)

    def __len__(self) -> int:
        return len(_COMMANDS)


def _mechanisms(owner: object, names: list[str]) -> list[tuple[str, Any]]:
    """(mechanism, method) of the `auth_` methods `names` of `owner`, named as aiosmtpd names
    them (a method's `__auth_mechanism_name__`, else its name after `auth_`, `__` as `-`)."""
    found = []
    for name in names:
        method = getattr(owner, name)
        mechanism = name.replace("auth_", "").replace("__", "-")
        found.append((getattr(method, "__auth_mechanism_name__", mechanism), method))
    return found


_MECHANISMS = _mechanisms(_Connection, _hooks(_Connection, ("auth_",)))


class _NothingToList:
    """What aiosmtpd's __init__ is given as the handler: it lists no hooks (see _Connection)."""

    def __dir__(self) -> list[str]:
        return []


_NOTHING_TO_LIST = _NothingToList()
_KEPT_SETTINGS = 16
"""At most this many sets of connection settings kept (listeners, certificate reloads)."""
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
_CHECK_LATER = AuthResult(success=False, handled=True)
"""What _authenticate answers: the credentials are checked by the auth_ method, off the loop."""


class SmtpIngress:
    """The listening SMTP servers; owns their connections and drains them on stop."""

    def __init__(
        self, handler: SmtpHandler, config: SmtpOptions, counts: ConnectionCounts | None = None
    ) -> None:
        """`counts`: the connections of every worker of the serve (None: this process alone
        counts its own)."""
        self._handler = handler
        self._config = config
        self.listeners = config.listeners_in_use()
        self._servers: list[asyncio.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop serving the connections (set by `start`): told to each connection, which
        aiosmtpd would otherwise look up under `warnings.catch_warnings()` every time."""
        self._kept_settings: dict[tuple[bool, int], tuple[dict[str, Any], dict[str, Any]]] = {}
        """By whether AUTH is required and the id of the TLS context (what differs between
        listeners): the keyword arguments of a connection and what aiosmtpd's __init__ made
        of them (see `_settings`)."""
        self.connections: set[_Connection] = set()
        self.counts = counts or ConnectionCounts.alone(
            config.max_connections, config.max_connections_per_ip
        )
        if (self.counts.max_connections, self.counts.max_per_ip) != (
            config.max_connections,
            config.max_connections_per_ip,
        ):
            log.warning(
                "smtp connection caps kept until restart",
                why="the config's differ from the ones the serve started with",
                max_connections=self.counts.max_connections,
                max_connections_per_ip=self.counts.max_per_ip,
            )
        self.data_timeout = config.data_timeout.total_seconds()
        # The handler's hooks and AUTH mechanisms as aiosmtpd would list them for every
        # connection (see _Connection.__init__), bound once.
        self.hooks: dict[str, Any] = {
            name[7:]: getattr(handler, name) for name in _hooks(type(handler), ("handle_",))
        }
        if "EHLO" in self.hooks:  # aiosmtpd would inspect its signature per connection
            raise TypeError("the SMTP handler has no handle_EHLO hook (see smtp_EHLO)")
        self.mechanisms = {
            name: _AuthMechAttr(method, False)
            for name, method in _mechanisms(handler, _hooks(type(handler), ("auth_",)))
        }
        self.auth = AuthGuard(config.auth_users)
        self.offers_auth = bool(config.auth_users)
        """Whether EHLO offers AUTH (when the connection allows it: TLS, or loopback)."""
        # aiosmtpd would look the host name up (a reverse DNS query) for every connection.
        self._hostname = config.hostname or socket.getfqdn()
        self.certificates: Certificates | None = None
        if config.tls.cert is not None and config.tls.key is not None:
            try:
                self.certificates = Certificates(config.tls.cert, config.tls.key)
            except CertificateError as exc:  # the files changed since the config was checked
                raise ConfigError([exc.problem]) from None

    def reload_certificates(self, tls: TlsOptions) -> str | None:
        """Present `tls`'s certificate to new connections; return its fingerprint (None
        without TLS). Raises CertificateError (the certificate in use stays)."""
        if self.certificates is None or tls.cert is None or tls.key is None:
            return None
        return self.certificates.reload(Path(tls.cert), Path(tls.key))

    @staticmethod
    def _authenticate(
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        # Never called: _Connection checks credentials itself, off the event loop. aiosmtpd
        # only needs an authenticator to exist to offer AUTH.
        raise NotImplementedError

    def _settings(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """What aiosmtpd's SMTP.__init__ sets on a connection made with `kwargs`, but the state
        asyncio.StreamReaderProtocol.__init__ sets (per connection): from one probe connection
        per set of `kwargs` (a listener's; another after a certificate reload). None without a
        loop (a connection made outside `start`, as tests make them): aiosmtpd's own then."""
        if kwargs.get("loop") is None:
            return None
        key = (kwargs["auth_required"], id(kwargs["tls_context"]))
        kept = self._kept_settings.get(key)
        if kept is not None and kept[0] == kwargs:
            return kept[1]
        probe = _Connection.__new__(_Connection)
        probe._listed = False
        SMTP.__init__(probe, _NOTHING_TO_LIST, **kwargs)
        stream = asyncio.StreamReaderProtocol.__new__(asyncio.StreamReaderProtocol)
        asyncio.StreamReaderProtocol.__init__(
            stream, asyncio.StreamReader(loop=kwargs["loop"]), lambda *_: None, loop=kwargs["loop"]
        )
        # Less what stream state is, and what _Connection.__init__ sets anyway (the tables
        # bound to the probe would keep it alive).
        settings = {k: v for k, v in probe.__dict__.items() if k not in stream.__dict__}
        for name in ("_listed", "event_handler", "_handle_hooks", "_smtp_methods", "_auth_methods"):
            del settings[name]
        if len(self._kept_settings) >= _KEPT_SETTINGS:
            self._kept_settings.clear()
        self._kept_settings[key] = (dict(kwargs), settings)
        return settings

    def _connection(self, listener: Listener | None = None) -> _Connection:
        listener = listener or self.listeners[0]
        starttls = listener.tls == "starttls" and self.certificates is not None
        return _Connection(
            self,
            self._handler,
            listener,
            data_size_limit=self._config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self._hostname,
            ident="sendguard",
            tls_context=self.certificates.context if starttls and self.certificates else None,
            timeout=self._config.timeout.total_seconds(),
            authenticator=self._authenticate if self._config.auth_users else None,
            auth_require_tls=True,
            auth_required=listener.require_auth,
            loop=self._loop,
        )

    async def start(self, socks: Sequence[socket.socket] = ()) -> None:
        """Listen on every listener's address (`smtp.listen` or `smtp.listeners`), or accept on
        `socks`, one per listener in that order (bound by sendguard.listeners)."""
        self._loop = loop = asyncio.get_running_loop()
        for index, listener in enumerate(self.listeners):
            host, port = split_listen(listener.listen)
            implicit = listener.tls == "implicit" and self.certificates is not None
            where: dict[str, Any] = (
                {"sock": socks[index]} if socks else {"host": host, "port": port}
            )
            try:
                server = await loop.create_server(
                    functools.partial(self._connection, listener),
                    ssl=self.certificates.context if implicit and self.certificates else None,
                    **where,
                )
            except OSError as exc:
                for started in self._servers:  # nothing is left listening half-started
                    started.close()
                self._servers.clear()
                field = listener.field("listen")
                raise OSError(
                    exc.errno, f"cannot listen on {listener.listen} ({field}): {exc.strerror}"
                ) from exc
            self._servers.append(server)

    async def stop(self, grace: float) -> None:
        """Stop accepting; let sessions finish for up to `grace` seconds, then close them."""
        if not self._servers:
            return
        for server in self._servers:
            server.close()
        deadline = monotonic() + grace
        # Messages in DATA are committed and answered before anything else happens.
        while (self.connections or self._handler.in_flight) and monotonic() < deadline:
            if not self._handler.in_flight and all(
                c.envelope is None or not c.envelope.rcpt_tos for c in self.connections
            ):
                break  # nobody is in the middle of a transaction
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            transport = connection.transport
            if transport is not None:
                _say(transport, connection._unsent() + b"421 4.3.2 Service shutting down\r\n")
            if transport is not None:
                transport.close()
        for server in self._servers:
            await server.wait_closed()
