"""DATA as clients send it: stuffed dots, pipelined commands, too much data, a 20 MB message."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.e2e.test_send_path import message
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def lines_of(sock: socket.socket, count: int, timeout: float = 20.0) -> list[bytes]:
    """The next `count` reply lines (final lines of replies, not continuation lines)."""
    sock.settimeout(timeout)
    buffered = b""
    replies: list[bytes] = []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {replies!r}"
        buffered += chunk
        *complete, buffered = buffered.split(b"\r\n")
        replies += [line for line in complete if line[3:4] != b"-"]
    return replies


def test_stuffed_dots_arrive_as_written(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    body = b".\r\n..\r\n.leading dot\r\nend.\r\n"
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=20) as smtp:
        smtp.sendmail("shop@example.com", ["dots@example.org"], message() + body)
    (got,) = sink.wait_for(1, timeout=20)
    assert got.content.endswith(b"the body.\r\n" + body)


def test_commands_pipelined_after_the_data_are_answered_in_order(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    with socket.create_connection(("127.0.0.1", proc.smtp_port), timeout=20) as sock:
        lines_of(sock, 1)  # greeting
        sock.sendall(b"EHLO pipeline.example\r\n")
        lines_of(sock, 1)
        one = b"MAIL FROM:<shop@example.com>\r\nRCPT TO:<one@example.org>\r\nDATA\r\n"
        sock.sendall(one)
        assert [r[:3] for r in lines_of(sock, 3)] == [b"250", b"250", b"354"]
        # The end of the first message, a whole second transaction and QUIT in one packet.
        two = b"MAIL FROM:<shop@example.com>\r\nRCPT TO:<two@example.org>\r\nDATA\r\n"
        sock.sendall(message() + b".\r\n" + two)
        assert [r[:3] for r in lines_of(sock, 4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(message(subject="Second") + b".\r\nQUIT\r\n")
        assert [r[:3] for r in lines_of(sock, 2)] == [b"250", b"221"]
    got = sink.wait_for(2, timeout=20)
    assert sorted(r.rcpt_tos[0] for r in got) == ["one@example.org", "two@example.org"]


def test_too_much_data_is_refused_after_the_data_and_the_session_goes_on(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(smtp={"max_message_size": 5000})
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=20) as smtp:
        smtp.ehlo("test")
        smtp.mail("shop@example.com")
        smtp.rcpt("big@example.org")
        code, _ = smtp.data(message() + b"x" * 998 + b"\r\n" * 1 + (b"y" * 900 + b"\r\n") * 6)
        assert code == 552
        code, _ = smtp.mail("shop@example.com")  # same connection, next transaction
        assert code == 250
        smtp.rcpt("small@example.org")
        assert smtp.data(message())[0] == 250
    (got,) = sink.wait_for(1, timeout=20)
    assert got.rcpt_tos == ["small@example.org"]


def test_a_line_over_1000_octets_is_refused_with_500(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=20) as smtp:
        smtp.ehlo("test")
        smtp.mail("shop@example.com")
        smtp.rcpt("long@example.org")
        code, reply = smtp.data(message() + b"z" * 1000 + b"\r\n")
        assert code == 500, reply
        assert smtp.noop()[0] == 250
    assert proc.states() == {}


def test_small_messages_are_answered_while_a_20_mb_message_is_received(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    big = message(subject="Big") + (b"0123456789" * 7 + b"\r\n") * 280_000  # ~20 MB
    big_done = threading.Event()
    big_code: list[int] = []

    def send_big() -> None:
        with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=300) as smtp:
            smtp.ehlo("test")
            smtp.mail("shop@example.com")
            smtp.rcpt("big@example.org")
            big_code.append(smtp.data(big)[0])
        big_done.set()

    sender = threading.Thread(target=send_big)
    answered_meanwhile = 0
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=60) as smtp:
        sender.start()
        time.sleep(0.05)
        for number in range(2000):
            if big_done.is_set():
                break
            smtp.sendmail("shop@example.com", [f"small{number}@example.org"], message())
            answered_meanwhile += not big_done.is_set()
    sender.join(timeout=300)
    assert big_code == [250]
    # Interleaving, not a figure: the big message never holds the loop for its whole length.
    assert answered_meanwhile >= 3


def test_small_messages_are_answered_and_forwarded_while_a_20_mb_message_is_sent_upstream(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    big = message(subject="Big") + (b".0123456789" * 7 + b"\r\n") * 250_000  # ~20 MB
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=300) as smtp:
        assert smtp.sendmail("shop@example.com", ["big@example.org"], big) == {}

    def big_arrived() -> bool:
        return any(r.rcpt_tos == ["big@example.org"] for r in sink.received)

    answered_meanwhile = 0
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=60) as smtp:
        for number in range(2000):
            if big_arrived():
                break
            smtp.sendmail("shop@example.com", [f"small{number}@example.org"], message())
            answered_meanwhile += not big_arrived()
    got = sink.wait_for(answered_meanwhile + 1, timeout=300)
    order = [r.rcpt_tos[0] for r in got]
    # Interleaving, not a figure: while the big message is loaded, encoded and sent upstream,
    # small ones are answered, and forwarded ahead of it on other upstream connections.
    assert answered_meanwhile >= 3
    assert order.index("big@example.org") >= 3
    (arrived,) = (r for r in got if r.rcpt_tos == ["big@example.org"])
    # Every leading dot was stuffed on the way out and unstuffed by the upstream.
    assert arrived.content.endswith(big.split(b"\r\n\r\n", 1)[1])


def varied_lines(size: int) -> bytes:
    """`size` octets or a little more of lines of every length up to 998, some starting with a
    dot, some empty, none a multiple of another's length (so pieces end mid-line)."""
    lines, total, number = [], 0, 0
    while total < size:
        number += 1
        text = f"{number:07d} " + "abcdefghijklmnopqrstuvwxyz0123456789"[number % 36] * (
            number * 7919 % 990
        )
        line = ("." + text if number % 13 == 0 else "" if number % 17 == 0 else text).encode()
        lines.append(line + b"\r\n")
        total += len(line) + 2
    return b"".join(lines)


@pytest.mark.both_backends
def test_a_20_mb_message_arrives_byte_identical(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    big = message("Date: Tue, 01 Dec 2026 10:00:00 +0000", subject="Big") + varied_lines(20 << 20)
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=300) as smtp:
        assert smtp.sendmail("shop@example.com", ["big@example.org"], big) == {}
    (arrived,) = sink.wait_for(1, timeout=300)
    # sendguard adds its Received line on top and changes no other octet (stored in pieces of
    # 1 MiB on the way: sql_content.py).
    received, _, rest = arrived.content.partition(b"\r\nFrom: shop@example.com\r\n")
    assert received.startswith(b"Received: ")
    assert len(received) < 1000
    assert b"From: shop@example.com\r\n" + rest == big
