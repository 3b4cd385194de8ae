"""Relay and API edges a user trial found (issue 10): what real clients send at the margins.

Malformed addresses refused and never rewritten (SMTP and HTTP), non-ASCII addresses only with
SMTPUTF8, one person per IDNA spelling, action endpoints that take an empty body, Idempotency-Key
compared canonically and scoped per token, trace headers on relayed mail, the class in any case.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from sendguard.password import hash_password
from tests.e2e.test_send_path import message, send
from tests.support.process import TOKEN, SendguardProcess, base_config, run_with_config
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


def client(proc: SendguardProcess, *, utf8: bool = False) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10)
    smtp.ehlo("client.example")
    if utf8:
        smtp.command_encoding = "utf-8"  # smtplib sends commands as ASCII unless told
    return smtp


def test_a_space_in_a_recipient_is_553_not_a_quoted_rewrite(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        code, reply = smtp.docmd("RCPT TO:<bad address@example.org>")
        assert code == 553, reply
        assert reply.startswith(b"5.1.3"), reply


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by .ci/run")
def test_swaks_to_a_malformed_recipient_is_refused(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    done = subprocess.run(
        [
            *("swaks", "--server", f"127.0.0.1:{proc.smtp_port}"),
            *("-f", "shop@example.com", "--to", "bad address@example.org"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "553 5.1.3" in done.stdout, done.stdout
    assert proc.states() == {}


def test_non_ascii_recipient_without_smtputf8_is_refused_in_the_dialog(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    with client(proc, utf8=True) as smtp:
        assert smtp.docmd("MAIL FROM:<shop@example.com>")[0] == 250
        code, reply = smtp.docmd("RCPT TO:<Üser@example.org>")
        assert code in (553, 555), reply
        assert reply.startswith(b"5.6.7"), reply
        code, reply = smtp.docmd("RCPT TO:<user@bücher.example>")
        assert code in (553, 555) and reply.startswith(b"5.6.7"), reply
        smtp.rset()
        smtp.command_encoding = "utf-8"  # rset sets it back to ASCII
        code, reply = smtp.docmd("MAIL FROM:<shöp@example.com>")
        assert code in (553, 555) and reply.startswith(b"5.6.7"), reply
        smtp.rset()
        smtp.command_encoding = "utf-8"
        assert smtp.docmd("MAIL FROM:<shöp@example.com> SMTPUTF8")[0] == 250
        assert smtp.docmd("RCPT TO:<Üser@example.org>")[0] == 250
    assert proc.states() == {}


def test_one_person_however_the_idna_domain_is_spelled(sendguard: Start) -> None:
    proc = sendguard()
    body = {
        "from": "shop@example.com",
        "to": ["ÄNN@Bücher.example", "änn@xn--bcher-kva.example", "Änn@BÜCHER.example"],
        "subject": "s",
        "text": "t",
    }
    status, answer = proc.call("POST", "/v1/messages", body)
    assert status == 202, answer
    assert len(answer["deliveries"]) == 1
    path = "/v1/recipients/" + urllib.parse.quote("änn@xn--bcher-kva.example") + "/timeline"
    status, timeline = proc.call("GET", path)
    assert status == 200, timeline
    assert [d["id"] for d in timeline["deliveries"]] == [answer["deliveries"][0]["id"]]


# --- empty bodies on action endpoints -----------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_action_endpoints_take_an_empty_body(sendguard: Start, content_type: str | None) -> None:
    proc = sendguard()
    headers = {"Content-Type": content_type} if content_type else {}
    status, answer = proc.call("POST", "/v1/pause", headers=headers, raw=b"")
    assert status == 200, answer
    status, answer = proc.call("POST", "/v1/resume", headers=headers, raw=b"")
    assert status == 200, answer
    status, answer = proc.call("POST", "/v1/campaigns/x/pause", headers=headers, raw=b"")
    assert status == 200, answer
    status, answer = proc.call("POST", "/v1/campaigns/x/resume", headers=headers, raw=b"")
    assert status == 200, answer
    status, answer = proc.call(
        "POST", "/v1/suppressions", {"address": "gone@example.org", "reason": "unsubscribe"}
    )
    assert status in (200, 201), answer
    status, answer = proc.call(
        "DELETE", "/v1/suppressions/gone@example.org", headers=headers, raw=b""
    )
    assert status == 200, answer
    # Present but not JSON is still an error, and a payload with required fields still needs them.
    status, answer = proc.call("POST", "/v1/pause", headers=headers, raw=b"not json")
    assert status == 400 and answer["error"]["code"] == "invalid_json", answer
    status, answer = proc.call("POST", "/v1/facts", headers=headers, raw=b"")
    assert status == 400, answer
    assert answer["error"]["field"] == "key", answer


# --- Idempotency-Key ----------------------------------------------------------------------


def _send_json(proc: SendguardProcess, text: str, key: str, token: str = TOKEN) -> tuple[int, dict]:
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        raw=text.encode(),
        token=token,
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    )
    return status, answer


def test_idempotency_key_with_the_same_json_reformatted_replays(sendguard: Start) -> None:
    proc = sendguard()
    body = {"from": "shop@example.com", "to": ["a@example.org"], "subject": "s", "text": "t"}
    status, first = _send_json(proc, json.dumps(body), "k-1")
    assert status == 202, first
    reordered = dict(reversed(list(body.items())))
    status, again = _send_json(proc, json.dumps(reordered, indent=4), "k-1")
    assert status == 202, again
    assert again["id"] == first["id"]
    assert len(proc.deliveries()) == 1


def test_idempotency_keys_are_scoped_per_token(sendguard: Start) -> None:
    proc = sendguard(http={"api_tokens": [TOKEN, {"name": "crm", "token": "crm-token-0123456789"}]})
    body = json.dumps({"from": "shop@example.com", "to": ["a@example.org"], "text": "t"})
    status, first = _send_json(proc, body, "shared-key")
    assert status == 202, first
    status, other = _send_json(proc, body, "shared-key", token="crm-token-0123456789")
    assert status == 202, other
    assert other["id"] != first["id"]
    status, replay = _send_json(proc, body, "shared-key", token="crm-token-0123456789")
    assert replay["id"] == other["id"]
    assert len(proc.deliveries()) == 2


# --- trace and required headers -----------------------------------------------------------


def test_smtp_relayed_mail_gets_received_date_and_message_id(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    bare = b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"
    with client(proc) as smtp:
        smtp.sendmail("shop@example.com", ["a@example.org", "b@example.org"], bare)
    got = sink.wait_for(2)
    copies = [g.message for g in got]
    for copy in copies:
        received = copy["Received"]
        assert received is not None
        assert received.startswith("from client.example ([127.0.0.1])"), received
        assert " with ESMTP id " in received
        assert "for <" not in received  # two recipients: the trace names neither
        assert copy["Date"] is not None
        assert copy["Message-ID"] is not None
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]
    assert copies[0]["Date"] == copies[1]["Date"]

    msg_id = send(proc, ["c@example.org"], message(subject="Kept", message_id="<m1@example.com>"))
    (kept,) = sink.wait_for(3)[2:]
    assert kept.message["Message-ID"] == "<m1@example.com>"
    assert kept.message.get_all("Message-ID") == ["<m1@example.com>"]
    assert f"id {msg_id}" in kept.message["Received"]
    assert "for <c@example.org>;" in kept.message["Received"]


def test_received_names_esmtpa_after_auth(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"auth_users": {"tool": hash_password("secret")}})
    with client(proc) as smtp:
        smtp.login("tool", "secret")
        smtp.sendmail("shop@example.com", ["a@example.org"], message())
    (got,) = sink.wait_for(1)
    assert " with ESMTPA id " in got.message["Received"]
    assert "Session.login_data is deprecated" not in proc.log()


def test_rfc822_post_gets_received_date_and_message_id(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    raw = b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"
    status, answer = proc.call(
        "POST", "/v1/messages", raw=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert status == 202, answer
    (got,) = sink.wait_for(1)
    copy = got.message
    assert copy["Received"].startswith("from HTTP client ([127.0.0.1])"), copy["Received"]
    assert f"id {answer['id']}" in copy["Received"]
    assert copy["Date"] is not None and copy["Message-ID"] is not None


def test_trace_headers_leave_the_content_fingerprint_alone(sendguard: Start, sink: Sink) -> None:
    """The same text with and without Date/Message-ID is one offer to the repetition policy."""
    proc = sendguard(policies=[{"plugin": "repetition", "options": {"limit": 1, "window": "1d"}}])
    bare = b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Offer\r\n\r\nBuy\r\n"
    dated = (
        b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Offer\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@example.com>\r\n\r\nBuy\r\n"
    )
    first = send(proc, ["a@example.org"], bare)
    second = send(proc, ["a@example.org"], dated)
    proc.wait_states({"a@example.org": "dropped"}, second)
    proc.wait_states({"a@example.org": "sent"}, first)


# --- the class in any case ----------------------------------------------------------------


def test_class_is_accepted_in_any_case_over_http_and_smtp(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    body = {"from": "shop@example.com", "to": ["a@example.org"], "class": "Transactional"}
    status, answer = proc.call("POST", "/v1/messages", body)
    assert status == 202, answer
    message_id = send(proc, ["b@example.org"], message("X-Sendguard-Class: MARKETING"))
    status, http_message = proc.call("GET", f"/v1/messages/{answer['id']}")
    assert http_message["class"] == "transactional", http_message
    status, smtp_message = proc.call("GET", f"/v1/messages/{message_id}")
    assert smtp_message["class"] == "marketing", smtp_message


# --- check-config -------------------------------------------------------------------------


def test_check_config_lists_an_unset_token_with_the_other_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_SENDGUARD_TOKEN", raising=False)
    config = base_config(None)
    config["http"]["api_tokens"] = ["env:NO_SUCH_SENDGUARD_TOKEN"]
    config["smtp"]["max_recipients"] = "many"
    config["delivery"]["wokers"] = 4
    code, output = run_with_config("check-config", config, tmp_path)
    assert code == 2
    assert "http.api_tokens[0]" in output and "NO_SUCH_SENDGUARD_TOKEN" in output, output
    assert "smtp.max_recipients" in output, output
    assert "delivery.wokers" in output, output
