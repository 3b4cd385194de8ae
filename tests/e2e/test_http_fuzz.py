"""Generated and malformed payloads against every endpoint: never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SendguardProcess]:
    sink = Sink(free_port())
    sink.start()
    config = base_config(sink.port)
    config["policies"] = [{"plugin": "schedule"}, {"plugin": "context"}, {"plugin": "human_hold"}]
    proc = SendguardProcess(Path(tmp_path_factory.mktemp("fuzz")), config)
    proc.start()
    yield proc
    proc.stop()
    sink.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
addresses = st.sampled_from(
    [
        "a@example.org",
        "x",
        "",
        "a@@b",
        "ü@exämple.de",
        "a\r\n@b.c",
        "b@example.org",
        "@",
        "a" * 70 + "@example.org",
    ]
)
times = st.sampled_from(
    ["2026-01-01T00:00:00Z", "2026-01-01", "yesterday", "", "Z", "2026-13-45T99:99:99+25:00"]
)


def field_values(name: str) -> st.SearchStrategy[Any]:
    special: dict[str, st.SearchStrategy[Any]] = {
        "from": addresses,
        "to": st.lists(addresses, max_size=3),
        "cc": st.lists(addresses),
        "bcc": st.lists(addresses, max_size=2),
        "recipient": addresses,
        "contact": addresses,
        "not_before": times,
        "data_as_of": times,
        "observed_at": times,
        "at": times,
        "wait": st.sampled_from(["1h", "x", "", "99999999999d"]),
        "requires": st.lists(st.sampled_from(["a=b", "a", "=", "k=v=w"]), max_size=3),
        "type": st.sampled_from(["open", "click", "nope", ""]),
        "class": st.sampled_from(["marketing", "transactional", "other"]),
        "timezone": st.sampled_from(["Europe/Berlin", "Nowhere/Else", "", "../../etc"]),
        "headers": st.dictionaries(
            st.sampled_from(["X-A", "Bad Name", "", "X\r\nY", "From"]),
            st.text(max_size=20),
            max_size=3,
        ),
    }
    return st.one_of(special.get(name, st.nothing()), json_values)


def payloads(fields: list[str]) -> st.SearchStrategy[Any]:
    structured = st.fixed_dictionaries({}, optional={f: field_values(f) for f in fields})
    return st.one_of(structured, json_values)


SEND = [
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "text",
    "html",
    "headers",
    "campaign",
    "class",
    "requires",
    "wait",
    "data_as_of",
    "not_before",
    "timezone",
    "offer",
]
ENDPOINTS = [
    ("/v1/messages", SEND),
    ("/v1/facts", ["key", "value", "contact", "observed_at"]),
    ("/v1/events", ["type", "recipient", "message_id", "at"]),
    ("/v1/deliveries/nope/approve", ["reviewer", "note"]),
    ("/v1/campaigns/fuzz/pause", ["reviewer", "note"]),
    ("/v1/campaigns/fuzz/resume", ["reviewer", "note"]),
    ("/v1/campaigns/fuzz/approve", ["reviewer", "note", "release"]),
    ("/v1/pause", ["reviewer", "note"]),
]


@pytest.mark.parametrize(("path", "fields"), ENDPOINTS)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_generated_json_never_gets_a_5xx(
    server: SendguardProcess, path: str, fields: list[str], data: st.DataObject
) -> None:
    body = data.draw(payloads(fields))
    status, answer = server.call("POST", path, body)
    assert status < 500, (path, body, answer)
    if status >= 400:
        assert set(answer["error"]) >= {"code", "message"}


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    query=st.sampled_from(
        ["", "?from=a@example.org", "?to=x", "?from=&to=b@example.org", "?to=b@example.org"]
    ),
)
def test_raw_messages_never_get_a_5xx(server: SendguardProcess, raw: bytes, query: str) -> None:
    status, answer = server.call(
        "POST", "/v1/messages" + query, raw=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert status < 500, (raw, answer)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=st.dictionaries(
        st.sampled_from(["state", "campaign", "recipient", "since", "cursor", "limit", "x"]),
        st.text(alphabet=st.characters(codec="ascii", exclude_characters="&#%+"), max_size=12),
        max_size=4,
    )
)
def test_listing_queries_never_get_a_5xx(server: SendguardProcess, query: dict[str, str]) -> None:
    status, answer = server.call("GET", "/v1/deliveries?" + urlencode(query))
    assert status < 500, (query, answer)
    status, answer = server.call(
        "GET", "/v1/recipients/a%40example.org/timeline?" + urlencode(query)
    )
    assert status < 500, (query, answer)
