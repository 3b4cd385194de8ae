"""What a send with several faults is told (session 14 read the payload anew): the first
bad address before a bad sendguard field, as before, on both ways of reading it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def test_a_bad_address_is_named_before_a_bad_field(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    base = {"from": "shop@example.com", "subject": "Hi", "text": "Hello"}
    # pydantic's path (not_before is no plain key): the address first, then the field
    status, answer = proc.call(
        "POST", "/v1/messages", {**base, "to": ["not an address"], "not_before": "soon"}
    )
    assert status == 400 and answer["error"]["field"] == "to[0]", answer
    status, answer = proc.call(
        "POST", "/v1/messages", {**base, "to": ["ann@example.org"], "not_before": "soon"}
    )
    assert status == 400 and answer["error"]["field"] == "not_before", answer
    # the plain path: the same answers as pydantic's for a plain payload's faults
    status, answer = proc.call("POST", "/v1/messages", {**base, "to": ["not an address"]})
    assert status == 400 and answer["error"]["field"] == "to[0]", answer
    status, answer = proc.call(
        "POST", "/v1/messages", {**base, "to": ["ann@example.org"], "campaign": ""}
    )
    assert status == 400 and answer["error"]["field"] == "campaign", answer
    status, answer = proc.call("POST", "/v1/messages", {**base, "to": ["ann@example.org"]})
    assert status == 202, answer
