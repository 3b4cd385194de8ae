"""SMTP resource limits: connection caps (in total and per client address) and slow clients.

A client that opens many idle sessions must not lock out the others; one that trickles its
message must not hold a session forever.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, base_config, run_with_config, stopped
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


TWO = ["--workers", "2"]


def smtp_sessions(port: int, count: int, source: str) -> tuple[list[smtplib.SMTP], int]:
    """Open `count` sessions from `source` with smtplib: (the greeted ones, how many were
    refused with 421 4.7.0)."""
    greeted: list[smtplib.SMTP] = []
    refusals: list[tuple[int, bytes]] = []
    for _ in range(count):
        try:
            greeted.append(smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)))
        except smtplib.SMTPConnectError as exc:
            refusals.append((exc.smtp_code, exc.smtp_error))
    assert all(
        code == 421 and text.startswith(b"4.7.0 Too many connections") for code, text in refusals
    ), refusals
    refused = len(refusals)
    return greeted, refused


@contextlib.contextmanager
def only(proc: SendguardProcess, worker: int) -> Iterator[None]:
    """Every worker of `proc` but `worker` stopped: new connections go to `worker`."""
    with contextlib.ExitStack() as paused:
        for other in proc.worker_pids():
            if other != worker:
                paused.enter_context(stopped(other))
        yield


def closing(sessions: list[smtplib.SMTP]) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for session in sessions:
        stack.callback(session.close)
    return stack


def test_with_two_workers_the_caps_hold_for_the_serve_and_are_given_back(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(smtp={"max_connections": 7, "max_connections_per_ip": 4}, serve_args=TWO)
    first, second = proc.worker_pids()
    with contextlib.ExitStack() as held:
        with only(proc, first):
            on_first, refused = smtp_sessions(proc.smtp_port, 3, "127.0.0.1")
        held.enter_context(closing(on_first))
        assert (len(on_first), refused) == (3, 0)
        # The other worker knows the address has 3 already: 4 per address for the serve.
        with only(proc, second):
            on_second, refused = smtp_sessions(proc.smtp_port, 3, "127.0.0.1")
        held.enter_context(closing(on_second))
        assert (len(on_second), refused) == (1, 2)
        # Another address is not held by those, but by the 7 in all.
        with only(proc, second):
            others, refused = smtp_sessions(proc.smtp_port, 4, "127.0.0.2")
        held.enter_context(closing(others))
        assert (len(others), refused) == (3, 1)
        # A session that ends on one worker gives its place back to the other.
        on_first.pop().quit()
        deadline = time.monotonic() + 20
        with only(proc, second):
            while True:
                again, refused = smtp_sessions(proc.smtp_port, 1, "127.0.0.1")
                if again or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        held.enter_context(closing(again))
        assert len(again) == 1
        # The sessions work: a message goes through on each worker's.
        for session in (on_first[0], on_second[0]):
            assert session.sendmail("shop@example.com", ["ann@example.org"], message()) == {}
    sink.wait_for(2, timeout=20)


def test_a_worker_killed_with_open_sessions_gives_their_places_back(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(smtp={"max_connections": 6, "max_connections_per_ip": 100}, serve_args=TWO)
    first, second = proc.worker_pids()
    with contextlib.ExitStack() as held:
        with only(proc, first):
            on_first, _ = smtp_sessions(proc.smtp_port, 3, "127.0.0.1")
        held.enter_context(closing(on_first))
        with only(proc, second):
            on_second, refused = smtp_sessions(proc.smtp_port, 4, "127.0.0.2")
        held.enter_context(closing(on_second))
        assert (len(on_first), len(on_second), refused) == (3, 3, 1)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while not any(
            e.get("event") == "worker died; starting another" and e.get("pid") == first
            for e in proc.log_events()
        ):
            assert time.monotonic() < deadline, proc.log()[-3000:]
            time.sleep(0.05)
        # The killed worker's 3 places are free again, the other's 3 still taken, whichever
        # worker (the survivor or the one replacing the dead) takes the new sessions.
        after, refused = smtp_sessions(proc.smtp_port, 4, "127.0.0.3")
        held.enter_context(closing(after))
        assert (len(after), refused) == (3, 1)
        assert on_second[0].sendmail("shop@example.com", ["ann@example.org"], message()) == {}
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
