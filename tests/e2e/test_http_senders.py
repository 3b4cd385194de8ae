"""The sender and recipients of `POST /v1/messages` as mail tools and ESP APIs write them
(standards trial, session 9).

- `"from": "Shop <shop@example.com>"` (RFC 5322 3.4 name-addr) was a 400; the From header now
  shows it as given and the envelope gets the address, as an ESP's API does. So for `to`, `cc`
  and `bcc`. A name with a comma must be quoted, or it reads as two mailboxes: a 400 saying so.
- The null sender of a bounce (DESIGN.md: `<>` relays like any other) could not be sent over
  HTTP: `?from=<>` gives it now, with either body, as `MAIL FROM:<>` over SMTP. An empty or
  `<>` JSON `from` is a 400 naming `from` and that fix (the From header needs an address).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

import pytest

from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


def send(
    proc: SendguardProcess, query: str = "", **fields: object
) -> tuple[int, dict[str, object]]:
    body = {"subject": "Hello", "text": "Hi there", **fields}
    status, answer = proc.call("POST", "/v1/messages" + query, body)
    return status, answer


def test_json_from_with_a_display_name_is_the_header_and_its_address_the_envelope(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    status, answer = send(
        proc,
        **{"from": "Shop <shop@example.com>", "to": ["Ann <ann@example.org>"]},
    )
    assert status == 202, answer
    (got,) = sink.wait_for(1)
    assert got.mail_from == "shop@example.com"
    assert got.rcpt_tos == ["ann@example.org"]
    assert got.message["From"] == "Shop <shop@example.com>"
    assert got.message["To"] == "Ann <ann@example.org>"
    assert got.message["Message-ID"].endswith("@example.com>"), got.message["Message-ID"]
    (delivery,) = answer["deliveries"]  # type: ignore[misc]
    assert delivery["recipient"] == "ann@example.org"


def test_quoted_and_non_ascii_display_names_keep_their_addresses(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    status, answer = send(
        proc,
        **{
            "from": "Jürgen Müller <shop@example.com>",
            "to": ['"Doe, Ann" <ann@example.org>'],
            "cc": ["J. Smith <js@example.org>"],
            "bcc": ["<hidden@example.org>"],
        },
    )
    assert status == 202, answer
    got = sink.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in got) == [
        "ann@example.org",
        "hidden@example.org",
        "js@example.org",
    ]
    message = got[0].message
    assert {r.mail_from for r in got} == {"shop@example.com"}
    assert message["From"].endswith(" <shop@example.com>") and "=?utf-8?" in message["From"]
    assert message["To"] == '"Doe, Ann" <ann@example.org>'
    assert b"hidden@example.org" not in got[0].content


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from", "Doe, Ann <shop@example.com>"),  # an unquoted comma: two mailboxes
        ("from", "Shop <bad address@example.com>"),  # never quoted into another address
        ("from", "Shop <shop@example.com> <other@example.com>"),
        ("to", "Ann <ann@localhost>"),  # the address inside follows the address rules
    ],
)
def test_a_mailbox_that_is_not_one_address_is_a_400_naming_the_field(
    sendguard: Start, field: str, value: str
) -> None:
    proc = sendguard()
    fields: dict[str, object] = {"from": "shop@example.com", "to": ["ann@example.org"]}
    fields[field] = value if field == "from" else [value]
    status, answer = send(proc, **fields)
    assert status == 400, answer
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["field"] == ("from" if field == "from" else "to[0]"), error
    assert proc.states() == {}


@pytest.mark.parametrize("value", ["", "<>"])
def test_an_empty_json_from_says_how_to_send_a_bounce(sendguard: Start, value: str) -> None:
    proc = sendguard()
    status, answer = send(proc, **{"from": value, "to": ["ann@example.org"]})
    assert status == 400, answer
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["field"] == "from"
    assert "?from=<>" in str(error["message"]), error


def test_null_sender_over_http_json_reaches_the_upstream_as_mail_from_null(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    status, answer = send(
        proc,
        "?from=%3C%3E",
        **{"from": "Mail Delivery System <MAILER-DAEMON@example.com>", "to": ["ann@example.org"]},
    )
    assert status == 202, answer
    (got,) = sink.wait_for(1)
    assert got.mail_from == "<>"  # aiosmtpd's spelling of MAIL FROM:<>
    assert got.message["From"] == "Mail Delivery System <MAILER-DAEMON@example.com>"
    status, shown = proc.call("GET", f"/v1/messages/{answer['id']}")
    assert status == 200 and shown["from"] == "", shown


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_null_sender_of_an_rfc822_bounce_with_curl(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    bounce = (
        b"From: Mail Delivery System <MAILER-DAEMON@example.com>\r\n"
        b"To: ann@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce@example.com>\r\n\r\nThe message could not be delivered.\r\n"
    )
    url = f"http://127.0.0.1:{proc.http_port}/v1/messages"
    done = subprocess.run(
        [
            *("curl", "-s", "-XPOST", "-H", f"Authorization: Bearer {TOKEN}"),
            *("-H", "Content-Type: message/rfc822", "--data-binary", "@-", f"{url}?from=<>"),
        ],
        input=bounce,
        capture_output=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(done.stdout)
    assert "id" in answer, answer
    (got,) = sink.wait_for(1)
    assert got.mail_from == "<>"
    assert got.rcpt_tos == ["ann@example.org"]


def test_null_sender_still_checks_the_recipients(sendguard: Start) -> None:
    proc = sendguard()
    status, answer = proc.call(
        "POST",
        "/v1/messages?from=%3C%3E&to=nobody",
        raw=b"From: MAILER-DAEMON@example.com\r\nTo: ann@example.org\r\n\r\nx\r\n",
        headers={"Content-Type": "message/rfc822"},
    )
    assert status == 400, answer
    assert answer["error"]["field"] == "to[0]", answer
