"""Story 3, too much mail: caps under concurrency, exemptions, shadow mode."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]
ONE_A_DAY = [
    {
        "plugin": "frequency",
        "options": {
            "caps": [{"scope": "recipient", "limit": 1, "window": "1d"}],
            "max_delay": "7d",
        },
    }
]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_fifty_at_once_over_several_connections_forward_exactly_one(
    sendguard: Start, sink: Sink, workers: str
) -> None:
    # With two workers the connections are spread over two processes sharing the store.
    proc = sendguard(policies=ONE_A_DAY, serve_args=["--workers", workers])
    replies: list[int] = []
    lock = threading.Lock()

    clients = proc.smtp_clients(5)

    def connection(n: int) -> None:
        with clients[n] as client:
            for i in range(10):
                client.sendmail(
                    "shop@example.com", ["busy@example.org"], message(subject=f"offer {n}-{i}")
                )
                with lock:
                    replies.append(250)

    threads = [threading.Thread(target=connection, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 50
    sink.wait_for(1)
    proc.wait_settled()
    assert len(sink.received) == 1
    states = proc.call("GET", "/v1/deliveries?recipient=busy@example.org&limit=100")[1]
    counted = [d["state"] for d in states["deliveries"]]
    assert counted.count("sent") == 1
    assert counted.count("delayed") == 49
    delayed = next(d for d in states["deliveries"] if d["state"] == "delayed")
    assert "recipient cap 1 per 1 day reached" in delayed["reason"]


def test_transactional_is_exempt(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=ONE_A_DAY)
    send(proc, ["tx@example.org"], message())
    for _ in range(3):
        send(proc, ["tx@example.org"], message("X-Sendguard-Class: transactional"))
    sink.wait_for(4)


def test_shadow_mode_counts_but_never_acts(sendguard: Start, sink: Sink) -> None:
    shadow = [{**ONE_A_DAY[0], "mode": "shadow"}]
    proc = sendguard(policies=shadow)
    for _ in range(3):
        send(proc, ["shadow@example.org"], message())
    sink.wait_for(3)
    _, body = proc.http_get("/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    key = (
        "sendguard_decisions_total",
        (("mode", "shadow"), ("policy", "frequency"), ("verdict", "delay")),
    )
    assert samples[key] == 2
    _status, line = proc.call("GET", "/v1/recipients/shadow@example.org/timeline")
    reasons = line["deliveries"][0]["reasons"]
    assert reasons[0]["mode"] == "shadow" and reasons[0]["verdict"] == "delay"
    assert line["deliveries"][0]["state"] in ("queued", "sending", "sent")


# --- bounces: the null sender is transactional unless the message says otherwise ---------------


def test_bounces_over_smtp_are_transactional_unless_the_class_header_says_otherwise(
    sendguard: Start, sink: Sink
) -> None:
    # A DSN (RFC 3464) is an automatic notification: a cap of 1/day delayed the second bounce
    # to one address by a day when the null sender was taken for marketing.
    proc = sendguard(policies=ONE_A_DAY)
    for n in range(3):
        send(proc, ["sender@example.org"], message(subject=f"bounce {n}"), sender="<>")
    sink.wait_for(3)
    assert set(proc.wait_settled().values()) == {"sent"}
    _status, line = proc.call("GET", "/v1/recipients/sender@example.org/timeline")
    for delivery in line["deliveries"]:
        (reason,) = delivery["reasons"]
        assert reason["verdict"] == "forward"
        assert reason["reason"] == "transactional mail is exempt (a bounce: null sender <>)"
    # Transactional sends do not count towards the cap: the first marketing one goes.
    for n in (4, 5):
        explicit = send(
            proc,
            ["sender@example.org"],
            message("X-Sendguard-Class: marketing", subject=f"bounce {n}"),
            sender="<>",
        )
    proc.wait_states({"sender@example.org": "delayed"}, explicit)
    status, shown = proc.call("GET", f"/v1/messages/{explicit}")
    assert status == 200 and shown["class"] == "marketing", shown


@pytest.mark.parametrize(
    "mark",
    [
        "List-Unsubscribe: <https://shop.example.com/u/ann>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Precedence: bulk",
        "Precedence:  List ",
    ],
)
def test_a_blast_with_the_null_sender_is_no_bounce(sendguard: Start, sink: Sink, mark: str) -> None:
    """A newsletter sent with `MAIL FROM:<>` and no campaign: its List-Unsubscribe or
    Precedence header says it went to a list, which no DSN or auto-reply does. It is
    marketing, so the cap applies: it passed as a bounce (transactional, exempt) before."""
    proc = sendguard(policies=ONE_A_DAY)
    first = send(proc, ["ann@example.org"], message(mark, subject="news 1"), sender="<>")
    second = send(proc, ["ann@example.org"], message(mark, subject="news 2"), sender="<>")
    proc.wait_states({"ann@example.org": "sent"}, first)
    proc.wait_states({"ann@example.org": "delayed"}, second)
    status, shown = proc.call("GET", f"/v1/messages/{second}")
    assert status == 200 and shown["class"] == "marketing", shown
    # A real DSN to the same address still goes: it is transactional.
    dsn = send(proc, ["ann@example.org"], message(subject="Undelivered Mail"), sender="<>")
    proc.wait_states({"ann@example.org": "sent"}, dsn)


@pytest.mark.parametrize(
    "marks",
    [
        # A Sieve vacation reply (Dovecot Pigeonhole), the BSD vacation(1) program's.
        ("Auto-Submitted: auto-replied (vacation)", "Precedence: bulk"),
        ("Auto-Submitted: auto-generated", "Precedence: junk"),
    ],
)
def test_an_auto_reply_with_the_null_sender_and_precedence_is_no_blast(
    sendguard: Start, sink: Sink, marks: tuple[str, ...]
) -> None:
    """An auto-responder sends from `<>` (RFC 3834 3.3) and many mark their reply `Precedence:
    bulk` or `junk` so that no other responder answers it; `Auto-Submitted` says it is one.
    It is no newsletter: transactional, not capped (the second was delayed by a day)."""
    proc = sendguard(policies=ONE_A_DAY)
    sent = [
        send(proc, ["ann@example.org"], message(*marks, subject=f"Out of office {n}"), sender="<>")
        for n in range(2)
    ]
    for queued in sent:
        proc.wait_states({"ann@example.org": "sent"}, queued)
    status, shown = proc.call("GET", f"/v1/messages/{sent[1]}")
    assert status == 200 and shown["class"] == "transactional", shown


def test_a_blast_over_http_with_the_null_sender_is_no_bounce(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=ONE_A_DAY)
    body = {
        "from": "news@example.com",
        "to": ["ann@example.org"],
        "subject": "News",
        "text": "x",
        "headers": {"List-Unsubscribe": "<mailto:u@example.com>"},
    }
    states = []
    for _ in range(2):
        status, answer = proc.call("POST", "/v1/messages?from=%3C%3E", body)
        assert status == 202, answer
        states.append(answer["deliveries"][0]["state"])
    assert states == ["queued", "delayed"], states


def test_a_bounce_over_http_is_transactional_unless_class_says_otherwise(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=ONE_A_DAY)
    body = {"from": "MAILER-DAEMON@example.com", "to": ["ann@example.org"], "subject": "Bounce"}
    for _ in range(2):
        status, answer = proc.call("POST", "/v1/messages?from=%3C%3E", {**body, "text": "x"})
        assert status == 202, answer
        assert answer["deliveries"][0]["state"] == "queued", answer
        status, shown = proc.call("GET", f"/v1/messages/{answer['id']}")
        assert status == 200 and shown["class"] == "transactional", shown
    sink.wait_for(2)
    states = []
    for _ in range(2):  # transactional sends do not count towards the cap
        status, answer = proc.call(
            "POST", "/v1/messages?from=%3C%3E", {**body, "text": "x", "class": "marketing"}
        )
        assert status == 202, answer
        states.append(answer["deliveries"][0]["state"])
    assert states == ["queued", "delayed"], states
    # A sender with an address is marketing by default, as before.
    status, answer = proc.call("POST", "/v1/messages", {**body, "to": ["bob@example.org"]})
    assert status == 202, answer
    status, shown = proc.call("GET", f"/v1/messages/{answer['id']}")
    assert shown["class"] == "marketing", shown
