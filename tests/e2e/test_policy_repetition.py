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
