"""The sendgrid, postmark and mailgun upstreams against local fake ESPs: the request shape and
auth are what the ESP expects; 429 waits for Retry-After, 500 is retried, 400 fails with the
ESP's own message kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.test_http_api import send_json
from tests.support.fake_esp import FakeEsp, upstream_config
from tests.support.process import SendguardProcess, base_config
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]
ESPS = ["sendgrid", "postmark", "mailgun"]


def _server(sendguard: Start, fake: FakeEsp, esp: str) -> SendguardProcess:
    config = base_config(None)
    # Replaced whole: the fixture would merge it into smtp's.
    config["upstream"] = upstream_config(fake, esp)
    return sendguard(config)


@pytest.mark.parametrize("esp", ESPS)
def test_forwarded_in_the_esps_shape(sendguard: Start, sink: Sink, fake: FakeEsp, esp: str) -> None:
    proc = _server(sendguard, fake, esp)
    send_json(
        proc,
        to=["ana@example.org"],
        subject="Hello",
        text="Hi Ana",
        html="<p>Hi</p>",
        headers={"X-Sendguard-Campaign": "welcome", "X-Custom": "kept"},
    )
    proc.wait_states({"ana@example.org": "sent"})
    (call,) = fake.wait_for(1)
    assert fake.problems == []
    assert call.recipient == "ana@example.org"
    if esp == "sendgrid":
        assert call.body["subject"] == "Hello"
        assert call.body["headers"]["X-Custom"] == "kept"
        assert "sendguard_delivery_id" in call.body["custom_args"]
    elif esp == "postmark":
        assert call.body["TextBody"].strip() == "Hi Ana"
        assert {"Name": "X-Custom", "Value": "kept"} in call.body["Headers"]
    else:
        assert b"X-Custom: kept" in call.body
        assert b"X-Sendguard" not in call.body


@pytest.mark.parametrize("esp", ESPS)
def test_429_waits_for_retry_after_and_500_is_retried(
    sendguard: Start, sink: Sink, fake: FakeEsp, esp: str
) -> None:
    proc = _server(sendguard, fake, esp)
    fake.script(
        (429, {"Retry-After": "3"}, {"message": "slow down"}), (500, {}, {"message": "oops"})
    )
    send_json(proc, to=["ben@example.org"])
    proc.wait_states({"ben@example.org": "sent"}, timeout=30)
    calls = fake.wait_for(3)
    assert fake.problems == []
    assert calls[1].at - calls[0].at >= 2.9  # min_backoff is 1s: Retry-After won
    assert [t for t, _ in proc.transitions("ben@example.org")].count("deferred") == 2


@pytest.mark.parametrize("esp", ESPS)
def test_400_fails_with_the_esps_message(
    sendguard: Start, sink: Sink, fake: FakeEsp, esp: str
) -> None:
    proc = _server(sendguard, fake, esp)
    refusal = {
        "sendgrid": {"errors": [{"message": "The from address does not match a verified Sender"}]},
        "postmark": {
            "ErrorCode": 400,
            "Message": "The from address does not match a verified Sender",
        },
        "mailgun": {"message": "The from address does not match a verified Sender"},
    }[esp]
    fake.script((422 if esp == "postmark" else 400, {}, refusal))
    send_json(proc, to=["cy@example.org"])
    proc.wait_states({"cy@example.org": "failed"})
    reason = proc.transitions("cy@example.org")[-1][1]
    assert "does not match a verified Sender" in reason
    assert len(fake.calls) == 1


@pytest.mark.parametrize("esp", ["sendgrid", "postmark"])
def test_a_large_message_is_rendered_whole(
    sendguard: Start, sink: Sink, fake: FakeEsp, esp: str
) -> None:
    # Above offload.LARGE the message is parsed for the ESP's JSON in a worker process.
    proc = _server(sendguard, fake, esp)
    text = "Grüße, line of a large text body\n" * 20_000  # ~700 KB
    send_json(proc, to=["Ana@Example.org"], subject="Large", text=text)
    proc.wait_states({"Ana@Example.org": "sent"}, timeout=60)
    (call,) = fake.wait_for(1)
    assert fake.problems == []
    got = call.body["content"][0]["value"] if esp == "sendgrid" else call.body["TextBody"]
    assert got.replace("\r\n", "\n") == text
