"""SMTP resource limits: connection caps (in total and per client address) and slow clients.

A client that opens many idle sessions must not lock out the others; one that trickles its
message must not hold a session forever.
"""

from __future__ import annotations

import contextlib
import select
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, base_config, run_with_config
from tests.support.raw_smtp import RawSmtp
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

IDLE = 1000


@contextlib.contextmanager
def idle_sessions(port: int, count: int, source: str = "127.0.0.1") -> Iterator[list[str]]:
    """Open `count` connections and leave them idle; yield each one's first reply line."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(
                socket.create_connection(
                    ("127.0.0.1", port), timeout=20, source_address=(source, 0)
                )
            )
        firsts = []
        for sock in socks:
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
            firsts.append(data.split(b"\r\n", 1)[0].decode())
        yield firsts
    finally:
        for sock in socks:
            sock.close()


def counts(firsts: list[str]) -> tuple[int, int]:
    greeted = sum(1 for line in firsts if line.startswith("220 "))
    refused = [line for line in firsts if not line.startswith("220 ")]
    assert all(line.startswith("421 4.7.0 Too many connections") for line in refused), set(refused)
    return greeted, len(refused)


def test_idle_connections_from_one_address_are_capped_and_others_still_served(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(smtp={"max_connections": 5000, "max_connections_per_ip": 50})
    with idle_sessions(proc.smtp_port, IDLE) as firsts:
        assert counts(firsts) == (50, IDLE - 50)
        # Another client address gets in and its message goes through.
        with RawSmtp(proc.smtp_port, source="127.0.0.2") as client:
            assert client.greet().startswith("250")
            assert client.command("MAIL FROM:<shop@example.com>").startswith("250")
            assert client.command("RCPT TO:<ann@example.org>").startswith("250")
            assert client.command("DATA").startswith("354")
            client.send(message() + b".\r\n")
            assert client.reply().startswith("250 2.0.0 Ok: queued as")
    sink.wait_for(1, timeout=20)
    # The slots are given back when the idle clients leave.
    send(proc, ["bob@example.org"], message())


def test_idle_connections_in_total_are_capped(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"max_connections": 100, "max_connections_per_ip": 5000})
    with (
        idle_sessions(proc.smtp_port, 150) as first,
        idle_sessions(proc.smtp_port, 150, source="127.0.0.3") as second,
    ):
        assert counts(first) == (100, 50)
        assert counts(second) == (0, 150)
    deadline = time.monotonic() + 20
    while True:  # the server notices the closed sessions a moment later
        try:
            send(proc, ["ann@example.org"], message())
            break
        except (AssertionError, smtplib.SMTPException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sink.wait_for(1, timeout=20)


def test_limits_are_validated_naming_the_key(tmp_path: Path) -> None:
    config = base_config(None)
    config["smtp"]["max_connections_per_ip"] = 0
    code, output = run_with_config("check-config", config, tmp_path)
    assert code != 0
    assert "smtp.max_connections_per_ip" in output, output


def test_slowloris_data_is_cut_off_and_nothing_is_stored(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"timeout": "60s", "data_timeout": "2s"})
    with RawSmtp(proc.smtp_port) as client:
        client.greet()
        assert client.command("MAIL FROM:<shop@example.com>").startswith("250")
        assert client.command("RCPT TO:<ann@example.org>").startswith("250")
        assert client.command("DATA").startswith("354")
        client.send(b"Subject: slow\r\n\r\n")
        said = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.send(b"x")  # a byte at a time: each one alone would reset an idle timer
            except OSError:
                break
            if select.select([client.sock], [], [], 0.2)[0]:
                try:
                    chunk = client.sock.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                said += chunk
        else:
            pytest.fail(f"the server still read a trickling DATA after 30 s; it said {said!r}")
    assert b"421 4.4.2" in said, said
    assert proc.states() == {}
    assert sink.received == []


def test_an_idle_session_is_told_why_it_is_closed(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"timeout": "1s"})
    with RawSmtp(proc.smtp_port) as client:
        client.greet()
        said = client.closed(20)
    assert said.startswith(b"421 4.4.2"), said
