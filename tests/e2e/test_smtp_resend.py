"""A client's retransmission is not delivered twice: an SMTP client that lost the 250 after DATA
sends the same message again (same Message-ID, sender and content) on a new connection;
sendguard answers 250 again and the recipient gets one copy (sendguard/resend.py)."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable

import pytest

from tests.e2e.test_policy_frequency import ONE_A_DAY
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

ORDER = message(subject="Your order 4711", message_id="<order-4711@shop.example>")
"""A transactional-looking message with the client's own Message-ID."""


# Each test waits for the first copy's own state before it counts what the sink got.


def _drop(proc: SendguardProcess, message_id: str, recipient: str) -> dict[str, object]:
    (delivery,) = [d for d in proc.deliveries(message_id) if d["recipient"] == recipient]
    assert delivery["state"] == "dropped", delivery
    return delivery


def test_the_same_bytes_again_on_a_new_connection_are_answered_250_and_sent_once(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    first = send(proc, ["ann@example.org"], ORDER)
    sink.wait_for(1)
    again = send(proc, ["ann@example.org"], ORDER)  # `send` asserts the 250

    proc.wait_settled()
    assert len(sink.received) == 1
    assert again != first
    dropped = _drop(proc, again, "ann@example.org")
    reason = str(dropped["reason"])
    assert reason.startswith(f"resend: a copy of message {first} (Message-ID <order-4711@")
    assert "the client sent it again; not sent twice" in reason
    assert [r["policy"] for r in dropped["reasons"]] == ["resend"]  # type: ignore[attr-defined]
    # The recipient's timeline shows both: the first sent, the copy dropped and why.
    status, line = proc.call("GET", "/v1/recipients/ann@example.org/timeline")
    assert status == 200
    states = {d["message_id"]: d["state"] for d in line["deliveries"]}
    assert states == {first: "sent", again: "dropped"}
    # A third try is a copy too.
    third = send(proc, ["ann@example.org"], ORDER)
    assert _drop(proc, third, "ann@example.org")["reason"] == reason  # names the first
    proc.wait_settled()
    assert len(sink.received) == 1


def test_a_marketing_resend_is_dropped_not_delayed_by_the_cap(sendguard: Start, sink: Sink) -> None:
    # Without the check the copy waits a day for the 1/day cap and then goes out again.
    proc = sendguard(policies=ONE_A_DAY)
    news = message(subject="Spring sale", message_id="<spring-1@shop.example>")
    first = send(proc, ["bo@example.org"], news)
    again = send(proc, ["bo@example.org"], news)
    proc.wait_states({"bo@example.org": "sent"}, first)
    _drop(proc, again, "bo@example.org")
    proc.wait_settled()
    assert len(sink.received) == 1


def test_the_same_message_id_with_another_body_is_another_message(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    send(proc, ["cy@example.org"], ORDER)
    changed = ORDER.replace(b"the body.", b"another body.")
    other = send(proc, ["cy@example.org"], changed)
    proc.wait_states({"cy@example.org": "sent"}, other)
    assert len(sink.wait_for(2)) == 2
    # Another sender with the same Message-ID and content is another message too.
    third = send(proc, ["cy@example.org"], ORDER, sender="news@example.com")
    proc.wait_states({"cy@example.org": "sent"}, third)
    assert len(sink.wait_for(3)) == 3


def test_a_resend_with_one_more_recipient_reaches_only_that_one(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    send(proc, ["dee@example.org", "eve@example.org"], ORDER)
    sink.wait_for(2)
    # The resend names a recipient in another case, and one the first did not have.
    again = send(proc, ["DEE@Example.org", "eve@example.org", "fay@example.org"], ORDER)
    proc.wait_settled()
    assert proc.states(again) == {
        "DEE@Example.org": "dropped",
        "eve@example.org": "dropped",
        "fay@example.org": "sent",
    }
    got = sink.wait_for(3)
    assert sorted(r for g in got for r in g.rcpt_tos) == [
        "dee@example.org",
        "eve@example.org",
        "fay@example.org",
    ]


def test_a_message_without_a_message_id_of_its_own_is_never_a_resend(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    bare = b"From: shop@example.com\r\nTo: gus@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"
    send(proc, ["gus@example.org"], bare)
    send(proc, ["gus@example.org"], bare)
    assert len(sink.wait_for(2)) == 2


def test_window_0_turns_the_check_off(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"resend_window": 0})
    send(proc, ["hal@example.org"], ORDER)
    send(proc, ["hal@example.org"], ORDER)
    assert len(sink.wait_for(2)) == 2


def test_a_resend_is_answered_250_even_when_dropped_mail_is_rejected(
    sendguard: Start, sink: Sink
) -> None:
    # `reject_dropped` answers 550 for an all-dropped message; a retransmission's first copy
    # was accepted, so the client must hear 250 and stop, not report a failure.
    proc = sendguard(smtp={"reject_dropped": True})
    first = send(proc, ["ida@example.org"], ORDER)
    again = send(proc, ["ida@example.org"], ORDER)
    _drop(proc, again, "ida@example.org")
    proc.wait_states({"ida@example.org": "sent"}, first)
    proc.wait_settled()
    assert len(sink.received) == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_copies_sent_at_once_over_several_connections_reach_the_recipient_once(
    sendguard: Start, sink: Sink, workers: str
) -> None:
    # A client retrying eagerly over several connections: the copies are judged at the same
    # time, in two processes with two workers; the recipient's lock orders them.
    proc = sendguard(serve_args=["--workers", workers])
    clients = proc.smtp_clients(6)
    replies: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(clients))

    def connection(client: smtplib.SMTP) -> None:
        with client:
            client.ehlo("test")
            start.wait()
            client.mail("shop@example.com")
            client.rcpt("jo@example.org")
            reply = client.data(ORDER)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=connection, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [code for code, _ in replies] == [250] * len(clients)
    sink.wait_for(1)
    proc.wait_settled()
    assert len(sink.received) == 1
    states = sorted(proc.states(r.decode().rsplit(" ", 1)[1])["jo@example.org"] for _, r in replies)
    assert states == ["dropped"] * (len(clients) - 1) + ["sent"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # A sign-in link mailed again: its token is in the path or the query, the host the same.
        (
            b"Sign in: https://app.example/login?token=AAAA1111",
            b"Sign in: https://app.example/login?token=BBBB2222",
        ),
        (
            b'<a href="https://app.example/reset/AAAA1111">Reset</a>',
            b'<a href="https://app.example/reset/BBBB2222">Reset</a>',
        ),
        # A code that differs in letter case only.
        (b"Your code: xkcd", b"Your code: XKCD"),
    ],
)
def test_a_message_that_reuses_a_message_id_with_another_link_or_code_is_sent(
    sendguard: Start, sink: Sink, first: bytes, second: bytes
) -> None:
    # A tool that writes one Message-ID for every mail of a kind (badly, but they exist) sends
    # a new sign-in link: the text fingerprint reads a URL as [link] and is blind to case, the
    # link fingerprint keeps hosts only; a retransmission is the same bytes, this is not.
    proc = sendguard()
    kind = "text/html" if first.startswith(b"<") else "text/plain"

    def mail(body: bytes) -> bytes:
        return (
            b"From: app@example.com\r\nTo: kim@example.org\r\nSubject: Sign in\r\n"
            b"Message-ID: <sign-in@app.example>\r\nContent-Type: "
            + kind.encode()
            + b"\r\n\r\n"
            + body
            + b"\r\n"
        )

    send(proc, ["kim@example.org"], mail(first))
    other = send(proc, ["kim@example.org"], mail(second))
    proc.wait_states({"kim@example.org": "sent"}, other)
    got = sink.wait_for(2)
    assert len(got) == 2
    assert sorted(first in g.content for g in got) == [False, True]  # one of each, in any order
    assert any(second in g.content for g in got)


def test_a_copy_of_a_message_whose_delivery_failed_is_sent(sendguard: Start, sink: Sink) -> None:
    # The first copy reached nobody (the upstream refused it for good); the client sending it
    # again is no double, and dropping it as a retransmission lost the mail while the client
    # heard 250 twice.
    proc = sendguard()
    sink.script(["554 5.7.1 Rejected for now"])
    first = send(proc, ["liv@example.org"], ORDER)
    proc.wait_states({"liv@example.org": "failed"}, first)
    again = send(proc, ["liv@example.org"], ORDER)
    proc.wait_states({"liv@example.org": "sent"}, again)
    assert len(sink.wait_for(1)) == 1
    # That delivered copy is the one a further retransmission is a copy of.
    third = send(proc, ["liv@example.org"], ORDER)
    assert str(_drop(proc, third, "liv@example.org")["reason"]).startswith(
        f"resend: a copy of message {again} "
    )
