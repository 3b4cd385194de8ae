"""Pass-through: a request that came in through an ESP's endpoint leaves for the same ESP in
that ESP's own shape (templates, their data, tracking, categories/tags, custom args and
attachments intact), one request per delivery carrying only its recipient.

The official Python SDKs send stored-template requests through sendguard to a fake ESP that
records what it gets: a recipient that may go now leaves at once, one delayed by a policy
leaves later in its own request, a held one after approval. A template send whose upstream is
another kind is refused (400 naming the field); plain sends to another ESP still leave rendered.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailgun.client import Client as MailgunClient
from postmarker.core import PostmarkClient
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from tests.support.fake_esp import KEY, Call, FakeEsp, upstream_config
from tests.support.process import TOKEN, SendguardProcess, base_config

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

POLICIES = [
    {"plugin": "schedule"},
    {"plugin": "human_hold", "options": {"hold_unapproved_campaigns": True}},
]
ATTACHMENT = base64.b64encode(b"the terms").decode()


def _server(sendguard: Start, fake: FakeEsp, esp: str) -> SendguardProcess:
    config = base_config(None)
    config["upstream"] = upstream_config(fake, esp)
    config["policies"] = POLICIES
    return sendguard(config)


def _soon(seconds: int = 4) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _only(fake: FakeEsp, recipient: str) -> Call:
    (call,) = [c for c in fake.calls if c.recipient == recipient]
    return call


def _wait_calls(fake: FakeEsp, count: int) -> None:
    fake.wait_for(count, timeout=30)


@pytest.mark.both_backends
def test_sendgrid_template_passes_through(sendguard: Start, fake: FakeEsp) -> None:
    proc = _server(sendguard, fake, "sendgrid")
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    tracking = {"click_tracking": {"enable": True}, "open_tracking": {"enable": True}}
    body: dict[str, Any] = {
        "from": {"email": "news@shop.example", "name": "Shop"},
        "template_id": "d-welcome",
        "personalizations": [
            {
                "to": [{"email": "Ana@Example.org", "name": "Ana"}],
                "dynamic_template_data": {"first": "Ana", "city": "Zürich"},
            },
            {
                "to": [{"email": "ben@example.org"}],
                "dynamic_template_data": {"first": "Ben"},
                "send_at": int(_soon().timestamp()),
            },
        ],
        "tracking_settings": tracking,
        "custom_args": {"order": "o-1"},
        "headers": {"X-Custom": "kept"},
        "attachments": [{"content": ATTACHMENT, "filename": "terms.txt", "type": "text/plain"}],
    }
    answer = client.send(body)
    assert answer.status_code == 202
    proc.wait_states({"Ana@Example.org": "sent", "ben@example.org": "delayed"})
    _wait_calls(fake, 1)
    ana = _only(fake, "Ana@Example.org").body
    assert ana["template_id"] == "d-welcome"
    assert ana["tracking_settings"] == tracking
    assert ana["attachments"] == body["attachments"]
    assert ana["headers"] == {"X-Custom": "kept"}
    assert ana["custom_args"] == {"order": "o-1"}
    (person,) = ana["personalizations"]
    assert person["to"] == [{"email": "Ana@Example.org", "name": "Ana"}]
    assert person["dynamic_template_data"] == {"first": "Ana", "city": "Zürich"}
    assert set(person["custom_args"]) == {"sendguard_delivery_id"}
    assert "ben@example.org" not in json.dumps(ana)

    proc.wait_states({"ben@example.org": "sent"}, timeout=30)
    _wait_calls(fake, 2)
    ben = _only(fake, "ben@example.org")
    assert ben.at > _only(fake, "Ana@Example.org").at
    (person,) = ben.body["personalizations"]
    assert person["to"] == [{"email": "ben@example.org"}]
    assert person["dynamic_template_data"] == {"first": "Ben"}
    assert "send_at" not in person and "send_at" not in ben.body  # sendguard waited for it
    assert "Ana" not in json.dumps(ben.body)

    held = {
        "from": {"email": "news@shop.example"},
        "template_id": "d-launch",
        "personalizations": [{"to": [{"email": "cy@example.org"}]}],
        "categories": ["launch", "spring"],
    }
    assert client.send(held).status_code == 202
    proc.wait_states({"cy@example.org": "held"})
    status, _ = proc.call("POST", "/v1/campaigns/launch/approve", {})
    assert status == 200
    proc.wait_states({"cy@example.org": "sent"})
    _wait_calls(fake, 3)
    cy = _only(fake, "cy@example.org").body
    assert cy["template_id"] == "d-launch" and cy["categories"] == ["launch", "spring"]
    assert fake.problems == []


def test_postmark_templates_pass_through(sendguard: Start, fake: FakeEsp) -> None:
    proc = _server(sendguard, fake, "postmark")
    client = PostmarkClient(server_token=TOKEN, root_api_url=f"http://127.0.0.1:{proc.http_port}/")
    results = client.emails.send_template_batch(
        {
            "From": "news@shop.example",
            "To": "Ana <ana@example.org>",
            "TemplateAlias": "welcome",
            "TemplateModel": {"first": "Ana"},
            "TrackOpens": True,
            "TrackLinks": "HtmlAndText",
            "MessageStream": "onboarding",
            "Metadata": {"order": "o-1"},
            "Attachments": [
                {"Name": "terms.txt", "Content": ATTACHMENT, "ContentType": "text/plain"}
            ],
        },
        {
            "From": "news@shop.example",
            "To": "ben@example.org",
            "TemplateAlias": "welcome",
            "TemplateModel": {"first": "Ben"},
            "Metadata": {"sendguard_not_before": _soon().isoformat()},
        },
    )
    assert [r["ErrorCode"] for r in results] == [0, 0]
    proc.wait_states({"ana@example.org": "sent", "ben@example.org": "delayed"})
    _wait_calls(fake, 1)
    ana = _only(fake, "Ana <ana@example.org>")
    assert ana.path == "/email/withTemplate"
    assert ana.body["TemplateAlias"] == "welcome"
    assert ana.body["TemplateModel"] == {"first": "Ana"}
    assert ana.body["TrackOpens"] is True and ana.body["TrackLinks"] == "HtmlAndText"
    assert ana.body["MessageStream"] == "onboarding"
    assert ana.body["Attachments"][0]["Content"] == ATTACHMENT
    assert ana.body["Metadata"]["order"] == "o-1"
    assert "sendguard_delivery_id" in ana.body["Metadata"]

    proc.wait_states({"ben@example.org": "sent"}, timeout=30)
    _wait_calls(fake, 2)
    ben = _only(fake, "ben@example.org")
    assert ben.at > ana.at
    assert ben.body["TemplateModel"] == {"first": "Ben"}
    assert set(ben.body["Metadata"]) == {"sendguard_delivery_id"}

    answer = client.emails.send_with_template(
        From="news@shop.example",
        To="cy@example.org",
        TemplateId=42,
        TemplateModel={"offer": "spring"},
        Tag="launch",
    )
    assert answer["ErrorCode"] == 0
    proc.wait_states({"cy@example.org": "held"})
    proc.call("POST", "/v1/campaigns/launch/approve", {})
    proc.wait_states({"cy@example.org": "sent"})
    _wait_calls(fake, 3)
    cy = _only(fake, "cy@example.org").body
    assert cy["TemplateId"] == 42 and cy["Tag"] == "launch"
    assert fake.problems == []


def test_mailgun_template_passes_through(sendguard: Start, fake: FakeEsp) -> None:
    proc = _server(sendguard, fake, "mailgun")
    client = MailgunClient(auth=("api", TOKEN), api_url=f"http://127.0.0.1:{proc.http_port}")
    when = email.utils.format_datetime(_soon())
    sent = client.messages.create(
        domain="mg.shop.example",
        data={
            "from": "news@shop.example",
            "to": ["ana@example.org", "ben@example.org"],
            "subject": "Hello %recipient.first%",
            "template": "welcome",
            "t:variables": json.dumps({"shop": "Shop"}),
            "recipient-variables": json.dumps(
                {"ana@example.org": {"first": "Ana"}, "ben@example.org": {"first": "Ben"}}
            ),
            "o:tracking": "yes",
            "o:deliverytime": when,
            "v:order": "o-1",
            "h:X-Custom": "kept",
        },
        files=[("attachment", ("terms.txt", b"the terms"))],
    )
    assert sent.status_code == 200, sent.text
    proc.wait_states({"ana@example.org": "delayed", "ben@example.org": "delayed"})
    proc.wait_states({"ana@example.org": "sent", "ben@example.org": "sent"}, timeout=30)
    _wait_calls(fake, 2)
    for address, first, other in (
        ("ana@example.org", "Ana", "ben@example.org"),
        ("ben@example.org", "Ben", "ana@example.org"),
    ):
        call = _only(fake, address)
        assert call.path == "/v3/mg.example/messages"
        fields = call.body["fields"]
        values = dict(fields)
        assert [v for k, v in fields if k == "to"] == [address]
        assert values["template"] == "welcome"
        assert json.loads(values["t:variables"]) == {"shop": "Shop"}
        assert json.loads(values["recipient-variables"]) == {address: {"first": first}}
        assert values["o:tracking"] == "yes" and values["v:order"] == "o-1"
        assert values["h:X-Custom"] == "kept"
        assert values["subject"] == "Hello %recipient.first%"  # Mailgun fills it in
        assert "o:deliverytime" not in values and "v:sendguard_delivery_id" in values
        assert other not in json.dumps(fields)
        assert call.body["files"] == {"terms.txt": b"the terms"}

    held = client.messages.create(
        domain="mg.shop.example",
        data={
            "from": "news@shop.example",
            "to": "cy@example.org",
            "template": "launch",
            "o:tag": "launch",
        },
    )
    assert held.status_code == 200
    proc.wait_states({"cy@example.org": "held"})
    proc.call("POST", "/v1/campaigns/launch/approve", {})
    proc.wait_states({"cy@example.org": "sent"})
    _wait_calls(fake, 3)
    assert dict(_only(fake, "cy@example.org").body["fields"])["o:tag"] == "launch"
    assert fake.problems == []


def test_templates_to_another_kind_are_refused_and_plain_sends_leave_rendered(
    sendguard: Start, fake: FakeEsp
) -> None:
    proc = _server(sendguard, fake, "postmark")
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    with pytest.raises(HTTPError) as refused:
        client.send(
            {
                "from": {"email": "news@shop.example"},
                "template_id": "d-welcome",
                "personalizations": [{"to": [{"email": "ana@example.org"}]}],
            }
        )
    assert refused.value.status_code == 400
    (error,) = json.loads(refused.value.body)["errors"]
    assert error["field"] == "template_id"
    assert "postmark" in error["message"] and "sendgrid" in error["message"]

    answer = client.send(
        {
            "from": {"email": "news@shop.example"},
            "subject": "Plain",
            "personalizations": [{"to": [{"email": "ana@example.org"}]}],
            "content": [{"type": "text/plain", "value": "Rendered by sendguard"}],
            "tracking_settings": {"open_tracking": {"enable": True}},
        }
    )
    assert answer.status_code == 202
    proc.wait_states({"ana@example.org": "sent"})
    (call,) = fake.wait_for(1)
    assert call.path == "/email"  # rendered into Postmark's /email, not passed through
    assert call.body["Subject"] == "Plain"
    assert call.body["TextBody"].strip() == "Rendered by sendguard"
    assert fake.problems == []


def test_a_route_decides_whether_a_template_may_be_sent(sendguard: Start, fake: FakeEsp) -> None:
    config = base_config(None)
    config["policies"] = [{"plugin": "schedule"}]
    config["upstream"] = {"kind": "outbox", "path": "var/outbox"}
    config["upstreams"] = {
        "sg": {"kind": "sendgrid", "api_key": KEY, "base_url": f"http://127.0.0.1:{fake.port}"}
    }
    config["routes"] = [{"campaign": "welcome", "upstream": "sg"}]
    proc = sendguard(config)
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")

    def send(campaign: str) -> Any:
        return client.send(
            {
                "from": {"email": "news@shop.example"},
                "template_id": "d-welcome",
                "personalizations": [
                    {
                        "to": [{"email": "ana@example.org"}],
                        "custom_args": {"sendguard_campaign": campaign},
                    }
                ],
            }
        )

    assert send("welcome").status_code == 202
    proc.wait_states({"ana@example.org": "sent"})
    (call,) = fake.wait_for(1)
    assert call.body["template_id"] == "d-welcome"
    with pytest.raises(HTTPError) as refused:
        send("other")
    assert refused.value.status_code == 400
    assert "'outbox'" in json.loads(refused.value.body)["errors"][0]["message"]
    time.sleep(0.2)
    assert len(fake.calls) == 1


def test_a_passed_through_request_is_retried_and_failed_by_the_esps_answers(
    sendguard: Start, fake: FakeEsp
) -> None:
    proc = _server(sendguard, fake, "sendgrid")
    fake.script(
        (500, {}, {"errors": [{"message": "try later"}]}),
        (400, {}, {"errors": [{"message": "The template_id is not a valid template ID."}]}),
    )
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    answer = client.send(
        {
            "from": {"email": "news@shop.example"},
            "template_id": "d-missing",
            "personalizations": [{"to": [{"email": "ana@example.org"}]}],
        }
    )
    assert answer.status_code == 202
    proc.wait_states({"ana@example.org": "failed"}, timeout=30)
    calls = fake.wait_for(2)
    assert [c.body["template_id"] for c in calls] == ["d-missing", "d-missing"]
    states = [state for state, _ in proc.transitions("ana@example.org")]
    assert "deferred" in states
    reason = proc.transitions("ana@example.org")[-1][1]
    assert "not a valid template ID" in reason


def test_mailgun_batch_cc_and_bcc_get_each_message_through_passthrough(
    sendguard: Start, fake: FakeEsp
) -> None:
    """A batch send's Cc and Bcc recipients get a request per batch message, each carrying
    that message's recipient variables under their own address (Mailgun renders the copy
    as the To recipient's message), and nobody else's address or values."""
    proc = _server(sendguard, fake, "mailgun")
    client = MailgunClient(auth=("api", TOKEN), api_url=f"http://127.0.0.1:{proc.http_port}")
    sent = client.messages.create(
        domain="mg.shop.example",
        data={
            "from": "news@shop.example",
            "to": ["ana@example.org", "ben@example.org"],
            "cc": "Boss <boss@example.org>",
            "bcc": "archive@example.org",
            "subject": "Hello %recipient.first%",
            "text": "Hi %recipient.first%",
            "recipient-variables": json.dumps(
                {"ana@example.org": {"first": "Ana"}, "ben@example.org": {"first": "Ben"}}
            ),
        },
    )
    assert sent.status_code == 200, sent.text
    _wait_calls(fake, 6)
    seen: dict[str, list[str]] = {}
    for call in fake.calls:
        fields = call.body["fields"]
        (to,) = [v for k, v in fields if k == "to"]
        assert not [k for k, _ in fields if k in ("cc", "bcc")]
        (variables,) = [json.loads(v) for k, v in fields if k == "recipient-variables"]
        (address,) = variables
        assert address == call.recipient.rpartition("<")[2].rstrip(">")
        seen.setdefault(to, []).append(variables[address]["first"])
    assert {to: sorted(firsts) for to, firsts in seen.items()} == {
        "ana@example.org": ["Ana"],
        "ben@example.org": ["Ben"],
        "Boss <boss@example.org>": ["Ana", "Ben"],
        "archive@example.org": ["Ana", "Ben"],
    }
    assert fake.problems == []
