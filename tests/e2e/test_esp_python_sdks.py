"""The ESPs' official Python SDKs, changed only in base URL and key, send through sendguard.

Each SDK: a send that is forwarded, a send that a cap delays, a campaign held then approved;
the SDK sees the success it expects (no exception). The upstream is the SMTP sink (rendered
mode), so what arrives is checked as a recipient would see it.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from mailgun.client import Client as MailgunClient
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Category, CustomArg, Mail

from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

POLICIES = [
    {
        "plugin": "frequency",
        "options": {"caps": [{"scope": "recipient", "limit": 1, "window": "1d"}]},
    },
    {"plugin": "human_hold", "options": {"hold_unapproved_campaigns": True}},
]


def _server(sendguard: Start) -> SendguardProcess:
    return sendguard(policies=POLICIES)


def _latest(proc: SendguardProcess, recipient: str) -> str:
    return proc.states()[recipient]


def _subjects(sink: Sink) -> list[str]:
    return [str(r.message["Subject"]) for r in sink.received]


def test_sendgrid_sdk_forwards_delays_and_holds(sendguard: Start, sink: Sink) -> None:
    proc = _server(sendguard)
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")

    sent = client.send(
        Mail("news@shop.example", "ana@example.org", "Welcome", html_content="<p>Hi</p>")
    )
    assert sent.status_code == 202
    assert sent.headers["X-Message-Id"]
    proc.wait_states({"ana@example.org": "sent"})
    arrived = sink.wait_for(1)[0]
    assert arrived.rcpt_tos == ["ana@example.org"]
    assert arrived.message["Subject"] == "Welcome"
    assert not any(h.lower().startswith("x-sendguard") for h in arrived.message)

    again = client.send(
        Mail("news@shop.example", "ana@example.org", "Second", html_content="<p>More</p>")
    )
    assert again.status_code == 202
    proc.wait_states({"ana@example.org": "delayed"})

    held = Mail("news@shop.example", "ben@example.org", "Launch", plain_text_content="New!")
    held.category = Category("launch")
    held.custom_arg = CustomArg("sendguard_class", "marketing")
    assert client.send(held).status_code == 202
    proc.wait_states({"ben@example.org": "held"})
    status, _ = proc.call("POST", "/v1/campaigns/launch/approve", {})
    assert status == 200
    proc.wait_states({"ben@example.org": "sent"})
    assert "Launch" in _subjects(sink)

    with pytest.raises(HTTPError) as refused:
        SendGridAPIClient("wrong-key", host=f"http://127.0.0.1:{proc.http_port}").send(
            Mail("news@shop.example", "cy@example.org", "No", plain_text_content="x")
        )
    assert refused.value.status_code == 401
    assert json.loads(refused.value.body)["errors"][0]["message"]


def test_postmarker_forwards_delays_and_holds(sendguard: Start, sink: Sink) -> None:
    proc = _server(sendguard)
    client = PostmarkClient(server_token=TOKEN, root_api_url=f"http://127.0.0.1:{proc.http_port}/")

    answer = client.emails.send(
        From="news@shop.example", To="ana@example.org", Subject="Welcome", TextBody="Hi"
    )
    assert answer["ErrorCode"] == 0 and answer["MessageID"]
    proc.wait_states({"ana@example.org": "sent"})
    assert sink.wait_for(1)[0].message["Subject"] == "Welcome"

    client.emails.send(
        From="news@shop.example", To="ana@example.org", Subject="Second", TextBody="More"
    )
    proc.wait_states({"ana@example.org": "delayed"})

    batch = client.emails.send_batch(
        {
            "From": "news@shop.example",
            "To": "ben@example.org",
            "Subject": "Launch",
            "TextBody": "New!",
            "Tag": "launch",
        },
        {
            "From": "news@shop.example",
            "To": "cy@example.org",
            "Subject": "Launch",
            "TextBody": "New!",
            "Metadata": {"campaign": "launch"},
        },
    )
    assert [r["ErrorCode"] for r in batch] == [0, 0]
    proc.wait_states({"ben@example.org": "held", "cy@example.org": "held"})
    proc.call("POST", "/v1/campaigns/launch/approve", {})
    proc.wait_states({"ben@example.org": "sent", "cy@example.org": "sent"})

    with pytest.raises(ClientError) as refused:
        client.emails.send_with_template(
            From="news@shop.example", To="dee@example.org", TemplateId=1, TemplateModel={}
        )
    assert refused.value.error_code == 300
    assert "TemplateId" in str(refused.value)
    with pytest.raises(ClientError) as bad_token:
        PostmarkClient(
            server_token="wrong", root_api_url=f"http://127.0.0.1:{proc.http_port}/"
        ).emails.send(From="news@shop.example", To="x@example.org", Subject="x", TextBody="x")
    assert bad_token.value.error_code == 10


def test_mailgun_sdk_forwards_delays_and_holds(sendguard: Start, sink: Sink) -> None:
    proc = _server(sendguard)
    client = MailgunClient(auth=("api", TOKEN), api_url=f"http://127.0.0.1:{proc.http_port}")
    domain = "mg.shop.example"

    first = client.messages.create(
        domain=domain,
        data={
            "from": "news@shop.example",
            "to": "ana@example.org",
            "subject": "Welcome",
            "text": "Hi",
        },
        files=[("attachment", ("terms.txt", b"the terms"))],
    )
    assert first.status_code == 200, first.text
    assert first.json()["message"] == "Queued. Thank you."
    proc.wait_states({"ana@example.org": "sent"})
    arrived = sink.wait_for(1)[0].message
    assert arrived["Subject"] == "Welcome"
    assert [p.get_filename() for p in arrived.walk() if p.get_filename()] == ["terms.txt"]

    client.messages.create(
        domain=domain,
        data={
            "from": "news@shop.example",
            "to": "ana@example.org",
            "subject": "Second",
            "text": "More",
        },
    )
    proc.wait_states({"ana@example.org": "delayed"})

    batch = client.messages.create(
        domain=domain,
        data={
            "from": "news@shop.example",
            "to": ["ben@example.org", "cy@example.org"],
            "subject": "Launch for %recipient.first%",
            "text": "New, %recipient.first%!",
            "o:tag": "launch",
            "recipient-variables": json.dumps(
                {"ben@example.org": {"first": "Ben"}, "cy@example.org": {"first": "Cy"}}
            ),
        },
    )
    assert batch.status_code == 200, batch.text
    proc.wait_states({"ben@example.org": "held", "cy@example.org": "held"})
    proc.call("POST", "/v1/campaigns/launch/approve", {})
    proc.wait_states({"ben@example.org": "sent", "cy@example.org": "sent"})
    deadline = time.monotonic() + 10
    while len(sink.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    by_rcpt = {r.rcpt_tos[0]: r.message for r in sink.received}
    assert by_rcpt["ben@example.org"]["Subject"] == "Launch for Ben"
    assert by_rcpt["cy@example.org"]["To"] == "cy@example.org"  # batch: nobody sees the others

    wrong = MailgunClient(auth=("api", "wrong"), api_url=f"http://127.0.0.1:{proc.http_port}")
    refused = wrong.messages.create(
        domain=domain, data={"from": "news@shop.example", "to": "x@example.org", "text": "x"}
    )
    assert refused.status_code == 401


def _post(proc: SendguardProcess, path: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{proc.http_port}{path}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_byte_identical_retry_is_answered_without_a_second_send(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    body = json.dumps(
        {
            "personalizations": [{"to": [{"email": "ana@example.org"}]}],
            "from": {"email": "news@shop.example"},
            "subject": "Once",
            "content": [{"type": "text/plain", "value": "Only once"}],
        }
    ).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    first = _post(proc, "/v3/mail/send", body, headers)
    second = _post(proc, "/v3/mail/send", body, headers)
    assert first[0] == second[0] == 202
    assert first[1]["X-Message-Id"] == second[1]["X-Message-Id"]
    proc.wait_settled()
    assert len(proc.deliveries()) == 1

    keyed = {**headers, "Idempotency-Key": "order-1"}
    body2 = body.replace(b"Once", b"Twice")
    a = _post(proc, "/v3/mail/send", body2, keyed)
    b = _post(proc, "/v3/mail/send", body2, keyed)
    assert a[1]["X-Message-Id"] == b[1]["X-Message-Id"]
    assert len(proc.deliveries()) == 2


def test_bad_input_is_answered_in_each_esps_error_shape(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, _, body = _post(
        proc,
        "/v3/mail/send",
        json.dumps(
            {
                "personalizations": [{"to": [{"email": "ana@example.org"}]}],
                "from": {"email": "news@shop.example"},
                "subject": "x",
                "template_id": "d-123",
            }
        ).encode(),
        bearer,
    )
    assert status == 400
    assert json.loads(body)["errors"][0]["field"] == "template_id"

    status, _, body = _post(
        proc,
        "/v3/mail/send",
        json.dumps(
            {
                "personalizations": [
                    {
                        "to": [{"email": "ana@example.org"}],
                        "custom_args": {"sendguard_wait": "soon"},
                    }
                ],
                "from": {"email": "news@shop.example"},
                "subject": "x",
                "content": [{"type": "text/plain", "value": "x"}],
            }
        ).encode(),
        bearer,
    )
    assert status == 400
    assert json.loads(body)["errors"][0]["field"] == "custom_args.sendguard_wait"

    postmark = {"X-Postmark-Server-Token": TOKEN, "Content-Type": "application/json"}
    status, _, body = _post(proc, "/email", b'{"From": "news@shop.example"}', postmark)
    assert status == 422
    assert json.loads(body) == {"ErrorCode": 300, "Message": "Zero recipients specified"}

    basic = base64.b64encode(f"api:{TOKEN}".encode()).decode()
    form = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = _post(proc, "/v3/mg.example/messages", b"to=a%40example.org&text=x", form)
    assert status == 400
    assert json.loads(body) == {"message": "from parameter is missing"}
    status, _, body = _post(
        proc,
        "/v3/mg.example/messages",
        b"from=a%40shop.example&to=b%40example.org&text=x&o%3Adeliverytime=tomorrow",
        form,
    )
    assert status == 400 and b"o:deliverytime" in body
    assert proc.deliveries() == []


def test_mailgun_batch_send_copies_every_message_to_cc_and_bcc(
    sendguard: Start, sink: Sink
) -> None:
    """Batch sending (`recipient-variables`) with `cc`/`bcc`: Mailgun sends each To
    recipient's message to the Cc and Bcc recipients too. sendguard answered "Queued" and
    made no delivery for them at all (session-10 trial): an archive Bcc never got a copy."""
    proc = sendguard()
    client = MailgunClient(auth=("api", TOKEN), api_url=f"http://127.0.0.1:{proc.http_port}")
    sent = client.messages.create(
        domain="mg.shop.example",
        data={
            "from": "news@shop.example",
            "to": ["ben@example.org", "cy@example.org"],
            "cc": "boss@example.org",
            "bcc": "archive@example.org",
            "subject": "Launch for %recipient.first%",
            "text": "New, %recipient.first%!",
            "recipient-variables": json.dumps(
                {"ben@example.org": {"first": "Ben"}, "cy@example.org": {"first": "Cy"}}
            ),
        },
    )
    assert sent.status_code == 200, sent.text
    arrived = sink.wait_for(6)
    by_rcpt: dict[str, list[str]] = {}
    for received in arrived:
        assert "Bcc" not in received.message
        assert received.message["To"] in ("ben@example.org", "cy@example.org")
        by_rcpt.setdefault(received.rcpt_tos[0], []).append(str(received.message["Subject"]))
    assert {rcpt: sorted(subjects) for rcpt, subjects in by_rcpt.items()} == {
        "ben@example.org": ["Launch for Ben"],
        "cy@example.org": ["Launch for Cy"],
        "boss@example.org": ["Launch for Ben", "Launch for Cy"],
        "archive@example.org": ["Launch for Ben", "Launch for Cy"],
    }


def test_a_refused_sendgrid_request_sends_none_of_its_personalizations(
    sendguard: Start, sink: Sink
) -> None:
    """SendGrid takes a request whole or not at all, and sendguard answers a bad
    personalization with a 400 for the whole request: so none of it may be sent. The first
    personalization was committed and sent before the second was found bad, and the
    corrected resend the 400 calls for sent it twice (session-10 trial)."""
    proc = sendguard()
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    body: dict[str, Any] = {
        "from": {"email": "news@shop.example"},
        "subject": "Half",
        "content": [{"type": "text/plain", "value": "Hi"}],
        "personalizations": [
            {"to": [{"email": "ana@example.org"}]},
            {"to": [{"email": "ben@example.org"}], "custom_args": {"sendguard_wait": "forever"}},
        ],
    }
    with pytest.raises(HTTPError) as refused:
        client.client.mail.send.post(request_body=body)
    assert refused.value.status_code == 400
    assert json.loads(refused.value.body)["errors"][0]["field"] == "custom_args.sendguard_wait"
    assert proc.deliveries() == []

    body["personalizations"][1]["custom_args"]["sendguard_wait"] = "1h"
    client.client.mail.send.post(request_body=body)
    proc.wait_states({"ana@example.org": "sent", "ben@example.org": "sent"})
    assert sorted(d["recipient"] for d in proc.deliveries()) == [
        "ana@example.org",
        "ben@example.org",
    ]


def test_a_sendgrid_send_at_in_milliseconds_is_a_400_naming_it(sendguard: Start) -> None:
    """`send_at` is seconds since 1970; JavaScript's Date.now() gives milliseconds. Such a
    value answered 500 "internal error; see the server log" in sendguard's own shape, not
    SendGrid's (datetime.fromtimestamp's "year 58890 is out of range", session-10 trial)."""
    proc = sendguard()
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    body: dict[str, Any] = {
        "from": {"email": "news@shop.example"},
        "subject": "Later",
        "content": [{"type": "text/plain", "value": "Hi"}],
        "personalizations": [{"to": [{"email": "ana@example.org"}], "send_at": 1796225000000}],
    }
    with pytest.raises(HTTPError) as refused:
        client.client.mail.send.post(request_body=body)
    assert refused.value.status_code == 400
    (error,) = json.loads(refused.value.body)["errors"]
    assert error["field"] == "send_at"
    assert "seconds" in error["message"]
    assert proc.deliveries() == []


def test_sendgrid_errors_name_the_field_as_the_request_spells_it(sendguard: Start) -> None:
    """`field` is the path in the request: `personalizations[0].to[0].email` (a string, not
    an array: no `[0]` after it) and `custom_args.sendguard_foo` (as its message says, not the
    bare key), so a client can point at what to fix (session-10 trial)."""
    proc = sendguard()
    client = SendGridAPIClient(TOKEN, host=f"http://127.0.0.1:{proc.http_port}")
    base: dict[str, Any] = {
        "from": {"email": "news@shop.example"},
        "subject": "x",
        "content": [{"type": "text/plain", "value": "x"}],
    }
    for personalization, field in (
        (
            {"to": [{"email": "ana@example.org"}, {"email": "nope"}]},
            "personalizations[0].to[1].email",
        ),
        (
            {"to": [{"email": "ana@example.org"}], "custom_args": {"sendguard_foo": "x"}},
            "custom_args.sendguard_foo",
        ),
    ):
        with pytest.raises(HTTPError) as refused:
            client.client.mail.send.post(
                request_body={**base, "personalizations": [personalization]}
            )
        (error,) = json.loads(refused.value.body)["errors"]
        assert (error["field"], error["message"].split(":")[0]) == (field, field)
    assert proc.deliveries() == []
