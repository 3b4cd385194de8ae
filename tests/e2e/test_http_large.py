"""A large `POST /v1/messages` goes through while small messages keep being answered."""

from __future__ import annotations

import json
import smtplib
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.test_send_path import message
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def test_small_messages_are_answered_while_a_large_json_message_is_built(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    # Quoted-printable encoding of this text is seconds of pure Python.
    text = "Grüße, a line of text that quoted-printable must encode = \n" * 40_000  # ~2.4 MB
    answers: list[tuple[int, Any]] = []

    def post() -> None:
        payload = {"from": "shop@example.com", "to": ["Big@Example.org"], "subject": "Big"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{proc.http_port}/v1/messages",
            data=json.dumps({**payload, "text": text}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            answers.append((answer.status, json.load(answer)))

    poster = threading.Thread(target=post)
    answered_meanwhile = 0
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=60) as smtp:
        smtp.ehlo("test")
        poster.start()
        for number in range(2000):
            if not poster.is_alive():
                break
            smtp.sendmail("shop@example.com", [f"small{number}@example.org"], message())
            answered_meanwhile += poster.is_alive()
    poster.join(timeout=120)
    ((status, body),) = answers
    assert status == 202, body
    # Interleaving, not a figure: building the big message never holds the loop throughout.
    assert answered_meanwhile >= 3
    deadline = time.monotonic() + 60
    while not (big := [r for r in sink.received if r.rcpt_tos == ["Big@Example.org"]]):
        assert time.monotonic() < deadline, proc.states(body["id"])
        time.sleep(0.05)
    part = big[0].message.get_payload(decode=True)
    assert isinstance(part, bytes)
    assert part.decode() == text.replace("\n", "\r\n")  # the lines of a message end in CRLF
