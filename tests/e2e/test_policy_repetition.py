"""Story 2, the same offer again and again: the repetition policy end to end."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.test_send_path import send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]


def offer(name: str, campaign: str, link_tag: str) -> bytes:
    return (
        f"From: shop@example.com\r\nTo: {name.lower()}@example.org\r\nSubject: 20% off\r\n"
        f"X-Campaign: {campaign}\r\n\r\nHi {name},\r\n\r\nOur offer: "
        f"https://shop.example/deal?id=7&utm_source={link_tag}\r\n"
    ).encode()


def test_same_offer_is_dropped_after_the_limit(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "repetition", "options": {"limit": 2, "window": "30d"}}])
    for tag in ("a", "b"):
        send(proc, ["ann@example.org"], offer("Ann", "deal", tag))
    sink.wait_for(2)
    third = send(proc, ["ann@example.org"], offer("Ann", "deal", "c"))
    proc.wait_states({"ann@example.org": "dropped"}, third)
    # the campaign is not what counts (a series may repeat): the same content is
    assert "already sent this content 2 times within" in proc.transitions("ann@example.org")[-1][1]
    # the same content under a new campaign name and another greeting: still a repeat
    renamed = send(proc, ["ann@example.org"], offer("Annie", "deal-reloaded", "d"))
    proc.wait_states({"ann@example.org": "dropped"}, renamed)
    assert "already sent this content 2 times" in proc.transitions("ann@example.org")[-1][1]
    # someone else still gets it
    send(proc, ["bob@example.org"], offer("Bob", "deal", "e"))
    sink.wait_for(3)
    time.sleep(0.3)
    assert len(sink.received) == 3


def test_two_encodings_of_one_offer_are_the_same_content(sendguard: Start, sink: Sink) -> None:
    """One tool sends over SMTP in 7 bits (RFC 2047 subject, quoted-printable HTML with
    entities); another posts the same offer as JSON with the characters themselves."""
    proc = sendguard(policies=[{"plugin": "repetition", "options": {"limit": 1, "window": "30d"}}])
    seven_bit = (
        b"From: shop@example.com\r\nTo: ann@example.org\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9_cr=C3=A8me_=E2=80=93_20=25_off?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<p>Our caf&eacute; cr&#232;me &ndash; 20% off this week=\r\n"
        b" only.</p>\r\n"
    )
    send(proc, ["ann@example.org"], seven_bit)
    sink.wait_for(1)
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["ann@example.org"],
            "subject": "Café crème \u2013 20% off",
            "html": "<p>Our café crème \u2013 20% off this week only.</p>",
        },
    )
    assert status == 202, answer
    proc.wait_states({"ann@example.org": "dropped"}, answer["id"])
    assert "already sent this content 1 time" in proc.transitions("ann@example.org")[-1][1]
    assert len(sink.received) == 1
