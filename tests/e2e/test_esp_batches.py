"""Large ESP requests are taken whole or not at all, and judged message after message.

A SendGrid send of many personalizations is committed in one transaction with its stored
answer: a personalization refused late in the request (a stored template its route cannot
send) leaves nothing committed, and the corrected resend delivers each person exactly once
(sent again byte for byte, it is answered from the store and sends nothing). Within one
request the same person's second message sees the first (a 1/day cap delays it). SendGrid's
reserved headers and an `email` holding several addresses are refused as SendGrid does.
A batch of events for one person wakes their waiting deliveries once, not once per event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from tests.support.fake_esp import KEY, FakeEsp
from tests.support.process import TOKEN, SendguardProcess, base_config
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

CAP = {
    "plugin": "frequency",
    "options": {"caps": [{"scope": "recipient", "limit": 1, "window": "1d"}]},
}
PEOPLE = 60


def _client(proc: SendguardProcess) -> SendGridAPIClient:
    return SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")


def _refusal(refused: pytest.ExceptionInfo[HTTPError]) -> dict[str, Any]:
    assert refused.value.status_code == 400
    (error,) = json.loads(refused.value.body)["errors"]
    return dict(error)


def _template_send(campaigns: list[str]) -> dict[str, Any]:
    return {
        "from": {"email": "news@shop.example"},
        "template_id": "d-welcome",
        "personalizations": [
            {
                "to": [{"email": f"p{i}@example.org"}],
                "custom_args": {"sendguard_campaign": campaign},
                "dynamic_template_data": {"n": i},
            }
            for i, campaign in enumerate(campaigns)
        ],
    }


def test_a_late_refusal_commits_nothing_and_the_resend_delivers_each_once(
    sendguard: Start, fake: FakeEsp
) -> None:
    config = base_config(None)
    config["policies"] = [{"plugin": "schedule"}, CAP]
    config["upstream"] = {"kind": "outbox", "path": "var/outbox"}
    config["upstreams"] = {
        "sg": {"kind": "sendgrid", "api_key": KEY, "base_url": f"http://127.0.0.1:{fake.port}"}
    }
    config["routes"] = [{"campaign": "welcome", "upstream": "sg"}]
    proc = sendguard(config)
    client = _client(proc)

    # The 51st of 60 personalizations names a campaign routed to the outbox, which cannot
    # render a SendGrid stored template: the whole request is refused, in SendGrid's shape.
    campaigns = ["welcome"] * PEOPLE
    campaigns[50] = "other"
    with pytest.raises(HTTPError) as refused:
        client.send(_template_send(campaigns))
    error = _refusal(refused)
    assert error["field"] == "template_id"
    assert "'outbox'" in error["message"]
    time.sleep(0.3)
    assert proc.deliveries() == []  # nothing of the request was committed
    assert fake.calls == []

    corrected = _template_send(["welcome"] * PEOPLE)
    sent = client.send(corrected)
    assert sent.status_code == 202
    first_id = sent.headers["X-Message-Id"]
    fake.wait_for(PEOPLE, timeout=60)
    proc.wait_states({f"p{i}@example.org": "sent" for i in range(PEOPLE)}, timeout=60)
    # A client retrying after a lost answer: the same bytes are answered from the store.
    again = client.send(corrected)
    assert again.status_code == 202
    assert again.headers["X-Message-Id"] == first_id
    time.sleep(0.3)
    recipients = sorted(c.recipient for c in fake.calls)
    assert recipients == sorted(f"p{i}@example.org" for i in range(PEOPLE))
    assert len(proc.deliveries()) == PEOPLE


def test_one_persons_second_message_in_a_request_sees_the_first(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=[CAP])
    people = ["ana@example.org", "ben@example.org", "Ana@Example.org"]
    sent = _client(proc).send(
        {
            "from": {"email": "news@shop.example"},
            "subject": "Hello",
            "content": [{"type": "text/plain", "value": "Hi"}],
            "personalizations": [{"to": [{"email": p}]} for p in people],
        }
    )
    assert sent.status_code == 202
    proc.wait_states({"ben@example.org": "sent"})
    deadline = time.monotonic() + 15
    states: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        states = [(d["recipient"].lower(), d["state"]) for d in proc.deliveries()]
        if ("ana@example.org", "sent") in states:
            break
        time.sleep(0.05)
    ana = sorted(state for who, state in states if who == "ana@example.org")
    assert ana == ["delayed", "sent"], states  # judged in order: the cap delays the second
    assert [r.rcpt_tos for r in sink.received].count(["ana@example.org"]) == 1


def test_sendgrid_reserved_headers_and_joined_addresses_are_refused(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    client = _client(proc)
    base: dict[str, Any] = {
        "from": {"email": "news@shop.example"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
        "personalizations": [{"to": [{"email": "ana@example.org"}]}],
    }

    with pytest.raises(HTTPError) as refused:
        client.send({**base, "headers": {"Bcc": "boss@example.org"}})
    error = _refusal(refused)
    assert error["field"] == "headers.Bcc"
    assert "reserved" in error["message"] and "Bcc" in error["message"]

    personal = {"to": [{"email": "ana@example.org"}], "headers": {"content-type": "text/x"}}
    with pytest.raises(HTTPError) as refused:
        client.send({**base, "personalizations": [personal]})
    assert _refusal(refused)["field"] == "personalizations[0].headers.content-type"

    joined = {"to": [{"email": "ana@example.org, ben@example.org"}]}
    with pytest.raises(HTTPError) as refused:
        client.send({**base, "personalizations": [joined]})
    error = _refusal(refused)
    assert error["field"] == "personalizations[0].to[0].email"
    assert "Does not contain a valid address" in error["message"]

    time.sleep(0.3)
    assert proc.deliveries() == []
    # A header of one's own still goes through.
    assert client.send({**base, "headers": {"X-Note": "kept"}}).status_code == 202
    (arrived,) = sink.wait_for(1)
    assert arrived.message["X-Note"] == "kept" and arrived.rcpt_tos == ["ana@example.org"]


def test_a_batch_of_events_wakes_each_persons_deliveries_once(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[CAP])
    client = _client(proc)
    for subject in ("First", "Second", "Third"):
        answer = client.send(
            {
                "from": {"email": "news@shop.example"},
                "subject": subject,
                "content": [{"type": "text/plain", "value": "Hi"}],
                "personalizations": [{"to": [{"email": "ana@example.org"}]}],
            }
        )
        assert answer.status_code == 202
    proc.wait_settled()
    assert sorted(proc.states().values()) == ["delayed"]
    before = len(proc.transitions("ana@example.org"))

    events = [{"type": "open", "recipient": "ana@example.org"} for _ in range(20)]
    status, answer = proc.call("POST", "/v1/events", events)
    assert status == 202
    assert [r["woken"] for r in answer["results"]] == [2] * 20  # the two delayed, once
    time.sleep(1.0)
    proc.wait_settled()
    woken = proc.transitions("ana@example.org")[before:]
    # Each delayed delivery judged again once (delayed again by the cap), not once per event.
    assert len([t for t in woken if t[0] == "delayed"]) == 2, woken
