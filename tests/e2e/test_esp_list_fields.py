"""ESP-compatible endpoints: a field given as a string where the ESP's API takes a list (or the
other way round) is a 400 that names the field by its full path and shows the accepted form,
as `POST /v1/messages` does (session 10). Each ESP's own API refuses the same shapes: SendGrid's
`to` is an array of `{"email"}` objects, Postmark's `To` one string of comma-separated
addresses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

_SENDGRID = {
    "from": {"email": "shop@example.com"},
    "subject": "Hello",
    "content": [{"type": "text/plain", "value": "Hi"}],
}


@pytest.mark.parametrize(
    ("body", "field", "form"),
    [
        (
            {**_SENDGRID, "personalizations": [{"to": "ann@example.org"}]},
            "personalizations[0].to",
            '"to": [{"email": "ann@example.org"}]',
        ),
        (
            {**_SENDGRID, "personalizations": [{"to": ["ann@example.org"]}]},
            "personalizations[0].to[0]",
            '{"email": "ann@example.org"}',
        ),
        (
            {
                **_SENDGRID,
                "personalizations": [{"to": [{"email": "a@example.org"}], "cc": "b@x.org"}],
            },
            "personalizations[0].cc",
            '"cc": [{"email": "ann@example.org"}]',
        ),
        (
            {
                **_SENDGRID,
                "from": "shop@example.com",
                "personalizations": [{"to": [{"email": "a@example.org"}]}],
            },
            "from",
            '"from": {"email": "shop@example.com"}',
        ),
        (
            {**_SENDGRID, "personalizations": {"to": [{"email": "a@example.org"}]}},
            "personalizations",
            '"personalizations": [{"to": [{"email": "ann@example.org"}]}]',
        ),
        (
            {
                **_SENDGRID,
                "categories": "spring",
                "personalizations": [{"to": [{"email": "a@example.org"}]}],
            },
            "categories",
            '"categories": ["spring"]',
        ),
    ],
)
def test_sendgrid_names_the_field_and_shows_its_form(
    sendguard: Start, body: dict[str, object], field: str, form: str
) -> None:
    proc = sendguard()
    status, answer = proc.call("POST", "/v3/mail/send", body)
    assert status == 400, answer
    (error,) = answer["errors"]
    assert error["field"] == field, error
    assert form in error["message"], error
    assert proc.states() == {}


@pytest.mark.parametrize(
    ("key", "value", "form"),
    [
        ("To", ["ann@example.org", "bob@example.org"], '"To": "ann@example.org, bob@example.org"'),
        ("Cc", ["ann@example.org"], '"Cc": "ann@example.org, bob@example.org"'),
    ],
)
def test_postmark_names_the_field_and_shows_its_form(
    sendguard: Start, key: str, value: list[str], form: str
) -> None:
    proc = sendguard()
    body = {"From": "shop@example.com", "To": "ann@example.org", "Subject": "Hi", "TextBody": "x"}
    status, answer = proc.call(
        "POST",
        "/email",
        {**body, key: value},
        token=None,
        headers={"X-Postmark-Server-Token": TOKEN},
    )
    assert status == 422, answer
    assert key in answer["Message"] and form in answer["Message"], answer
    assert proc.states() == {}


def test_postmark_batch_given_one_email_object_shows_the_array(sendguard: Start) -> None:
    proc = sendguard()
    body = {"From": "shop@example.com", "To": "ann@example.org", "Subject": "Hi", "TextBody": "x"}
    status, answer = proc.call(
        "POST", "/email/batch", body, token=None, headers={"X-Postmark-Server-Token": TOKEN}
    )
    assert status == 422, answer
    assert "[{" in answer["Message"] and "/email" in answer["Message"], answer


def test_well_formed_requests_still_send(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    body = {**_SENDGRID, "personalizations": [{"to": [{"email": "ann@example.org"}]}]}
    status, answer = proc.call("POST", "/v3/mail/send", body)
    assert status == 202, answer
    sink.wait_for(1)
