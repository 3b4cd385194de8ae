"""A connection's tables of commands, handler hooks and AUTH mechanisms are aiosmtpd's own.

_Connection sets them from lists made once instead of letting aiosmtpd list the connection
and the handler on every connection; here aiosmtpd's __init__ builds them again on a second
connection, as it would, and both must match.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiosmtpd.smtp import SMTP

from sendguard.config import SmtpOptions
from sendguard.ingress import smtp
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.password import hash_password


async def test_tables_are_those_aiosmtpd_builds() -> None:
    config = SmtpOptions(auth_users={"crm": hash_password("pw")})
    handler = SmtpHandler(intake=None, config=config, metrics=None)  # type: ignore[arg-type]
    ingress = SmtpIngress(handler, config)
    ours = ingress._connection()
    theirs = ingress._connection()
    SMTP.__init__(theirs, handler, hostname="tables.example")  # lists theirs and the handler

    assert ours.event_handler is theirs.event_handler is handler
    assert ours._handle_hooks == theirs._handle_hooks
    assert set(ours._handle_hooks) >= {"DATA", "MAIL", "RCPT"}
    assert ours._ehlo_hook_ver is theirs._ehlo_hook_ver is None

    assert ours._smtp_methods.keys() == theirs._smtp_methods.keys()
    for name, method in ours._smtp_methods.items():
        assert method.__func__ is theirs._smtp_methods[name].__func__, name
        assert method.__self__ is ours, name
    assert {"EHLO", "MAIL", "RCPT", "DATA", "AUTH", "STARTTLS", "QUIT"} <= ours._smtp_methods.keys()

    assert ours._auth_methods.keys() == theirs._auth_methods.keys() == {"LOGIN", "PLAIN"}
    for name, mechanism in ours._auth_methods.items():
        other = theirs._auth_methods[name]
        assert mechanism.is_builtin == other.is_builtin, name
        assert mechanism.method.__func__ is other.method.__func__, name
        assert mechanism.method.__self__ is ours, name


async def test_a_connection_still_lists_its_commands() -> None:
    config = SmtpOptions()
    ingress = SmtpIngress(SmtpHandler(None, config, None), config)  # type: ignore[arg-type]
    assert "smtp_MAIL" in dir(ingress._connection())


def test_a_peer_address_is_read_as_ipaddress_reads_it_once_per_client() -> None:
    from sendguard.ingress import smtp  # noqa: PLC0415 - its private reader

    assert smtp._ip_of(("127.0.0.1", 4000)) == ipaddress.ip_address("127.0.0.1")
    assert smtp._ip_of(("::ffff:10.1.2.3", 4000, 0, 0)) == ipaddress.ip_address("10.1.2.3")
    assert smtp._ip_of(("2001:db8::1", 4000, 0, 0)) == ipaddress.ip_address("2001:db8::1")
    assert smtp._ip_of(("/run/sock", 0)) is None  # a host that is no IP address
    assert smtp._ip_of("/run/sock") is None  # a Unix socket's peer
    assert smtp._ip_of((b"127.0.0.1", 4000)) is None
    first = smtp._ip_of(("192.0.2.7", 1))
    assert smtp._ip_of(("192.0.2.7", 2)) is first  # the second client from there: kept


async def test_a_connection_is_set_up_as_aiosmtpd_sets_one_up() -> None:
    # What aiosmtpd's __init__ sets is copied from a probe made once per listener: a connection
    # made so has every attribute aiosmtpd would give it, with the same values, and state of
    # its own (stream reader, futures, tables bound to it).
    config = SmtpOptions(auth_users={"crm": hash_password("pw")})
    handler = SmtpHandler(intake=None, config=config, metrics=None)  # type: ignore[arg-type]
    ingress = SmtpIngress(handler, config)
    ingress._loop = asyncio.get_running_loop()
    ours: Any = ingress._connection()
    again: Any = ingress._connection()
    assert len(ingress._kept_settings) == 1  # the probe ran once
    theirs = ingress._connection()
    SMTP.__init__(theirs, handler, **_arguments(ingress))

    assert ours.__dict__.keys() == theirs.__dict__.keys()
    own = {"_stream_reader_wr", "_strong_reader", "_closed", "_client_connected_cb"}
    own |= {"_drain_waiters", "_smtp_methods", "_auth_methods", "_handle_hooks"}
    for name, value in theirs.__dict__.items():
        if name in own:
            continue
        assert ours.__dict__[name] == value, name
    assert ours._handle_hooks == theirs._handle_hooks
    assert ours._closed is not again._closed
    assert ours._stream_reader is not again._stream_reader
    assert ours._stream_reader._limit == theirs.__dict__["_stream_reader_wr"]()._limit
    assert ours._client_connected_cb.__self__ is ours
    assert ours._smtp_methods["MAIL"].__self__ is ours
    assert ours._smtp_methods.get("NOPE") is None
    assert dict(ours._smtp_methods).keys() == theirs._smtp_methods.keys()
    assert ours.loop is asyncio.get_running_loop()


def _arguments(ingress: SmtpIngress) -> dict[str, Any]:
    """The keyword arguments SmtpIngress gives a connection of its first listener."""
    made: dict[str, Any] = {}

    def keep(self: Any, server: Any, handler: Any, listener: Any, **kwargs: Any) -> None:
        made.update(kwargs)

    real = smtp._Connection.__init__
    smtp._Connection.__init__ = keep  # type: ignore[method-assign]
    try:
        ingress._connection()
    finally:
        smtp._Connection.__init__ = real  # type: ignore[method-assign]
    return made
