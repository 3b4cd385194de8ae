"""Defects schemathesis found in the HTTP API, each pinned by a request a client could send."""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import TOKEN, SendguardProcess, base_config, free_port
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SendguardProcess]:
    sink = Sink(free_port())
    sink.start()
    proc = SendguardProcess(Path(tmp_path_factory.mktemp("edges")), base_config(sink.port))
    proc.start()
    yield proc
    proc.stop()
    sink.stop()


def test_a_recipient_filter_or_timeline_of_a_non_address_is_a_400(
    server: SendguardProcess,
) -> None:
    status, answer = server.call("GET", "/v1/deliveries?recipient=null")
    assert (status, answer["error"]["field"]) == (400, "recipient")
    status, answer = server.call("GET", "/v1/recipients/0%400.0/timeline")
    assert (status, answer["error"]["field"]) == (400, "address")
    assert server.call("GET", "/v1/deliveries?recipient=")[0] == 200  # empty: no filter
    assert server.call("GET", "/v1/recipients/Ann%40Example.org/timeline")[0] == 200


def test_the_query_gives_the_envelope_of_a_json_send_too(server: SendguardProcess) -> None:
    body = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}
    status, answer = server.call("POST", "/v1/messages?to=c%40example.org", body)
    assert status == 202, answer
    assert [d["recipient"] for d in answer["deliveries"]] == ["c@example.org"]
    status, answer = server.call("POST", "/v1/messages?to=nobody", body)
    assert (status, answer["error"]["field"]) == (400, "to[0]")


@pytest.mark.parametrize(("path", "field"), [("/v1/events", "at"), ("/v1/facts", "observed_at")])
def test_an_empty_time_is_a_400_not_now(server: SendguardProcess, path: str, field: str) -> None:
    body = {"type": "open", "recipient": "b@example.org", field: ""}
    if path == "/v1/facts":
        body = {"key": "k", "value": "v", field: ""}
    status, answer = server.call("POST", path, body)
    assert (status, answer["error"]["field"]) == (400, field)


def test_a_wrong_method_is_a_405_with_or_without_a_token(server: SendguardProcess) -> None:
    for token in (None, TOKEN):
        status, answer = server.call("DELETE", "/healthz", token=token)
        assert status == 405, answer
        status, answer = server.call("DELETE", "/v1/messages", token=token)
        assert status == 405, answer
    assert server.call("GET", "/no/such/path", token=None)[0] == 401  # tells a stranger nothing


def test_a_shadow_window_longer_than_ten_years_reports_everything(
    server: SendguardProcess,
) -> None:
    status, answer = server.call("GET", "/v1/policies/shadow?since=99999999999d")
    assert status == 200, answer
    assert server.call("GET", "/v1/policies/shadow?since=soon")[0] == 400


def test_header_names_in_a_json_send_follow_rfc_5322(server: SendguardProcess) -> None:
    body = {"from": "a@example.com", "to": ["b@example.org"], "headers": {"X-\x01": "v"}}
    status, answer = server.call("POST", "/v1/messages", body)
    assert (status, answer["error"]["field"]) == (400, "headers")
    body["headers"] = {"X-Fine": "a\x0cb"}
    assert server.call("POST", "/v1/messages", body)[0] == 400


def test_a_postmark_campaign_must_be_a_string(server: SendguardProcess) -> None:
    email = {
        "From": "a@example.com",
        "To": "b@example.org",
        "TextBody": "t",
        "Metadata": {"campaign": {}},
    }
    status, answer = server.call(
        "POST", "/email", email, token=None, headers={"X-Postmark-Server-Token": TOKEN}
    )
    assert status == 422, answer
    assert "Metadata.campaign" in answer["Message"]
    email["Metadata"] = False
    status, answer = server.call(
        "POST", "/email", email, token=None, headers={"X-Postmark-Server-Token": TOKEN}
    )
    assert status == 422, answer


def test_a_mailgun_mime_field_cannot_inject_a_header(server: SendguardProcess) -> None:
    boundary = "b0undary"
    parts = [
        ("to", "b@example.org", None),
        ("v:sendguard_campaign", "c\r\nBcc: evil@example.net", None),
        ("message", "From: a@example.com\r\n\r\nhi\r\n", "m.eml"),
    ]
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n".encode()
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/v3/mg.example.com/messages.mime",
        data=body,
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Authorization": "Basic " + base64.b64encode(f"api:{TOKEN}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    assert status == 400


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_a_recipient_field_given_as_a_string_says_to_write_a_list(
    server: SendguardProcess, field: str
) -> None:
    # Found by the session-9 trials: `"to": "x@y"` was answered `Input should be a valid list`.
    body = {"from": "a@example.com", field: "b@example.org", "subject": "s", "text": "t"}
    status, answer = server.call("POST", "/v1/messages", body)
    assert (status, answer["error"]["field"]) == (400, field), answer
    message = answer["error"]["message"]
    assert message.startswith(f"{field}: "), message
    assert f'"{field}": ["b@example.org"]' in message, message
