"""`parse_json` reads with orjson where it can: it must read every body as `json.loads` does."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendguard.ingress.payloads import orjson_may_differ, parse_json

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def outcome(read: Any, body: bytes) -> tuple[str, Any]:
    try:
        value = read(body)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc).__name__
    # 0.0 == -0.0 and 1 == 1.0: compare the values as the json module writes them back.
    return "value", json.dumps(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES, st.sampled_from([None, 2]))
def test_json_reads_the_same(value: Any, indent: int | None) -> None:
    body = json.dumps(value, indent=indent).encode()
    assert outcome(parse_json, body) == outcome(json.loads, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b"1E400",
        b"-1E400",
        b"-0",
        b"-0.0",
        b"NaN",
        b"[Infinity, -Infinity]",
        b"[1e-400]",
        b'"\\ud800"',
        b'"\\u0000"',
        "\ufeff{}".encode(),
        '{"a": 1}'.encode("utf-16"),
        b"18446744073709551616",
        b"-9223372036854775809",
        b'{"n": -12345678901234567890123}',
        b"1.0000000000000001",
        b"{",
        b"[1,]",
        b"\xff",
        b"",
    ],
)
def test_edge_bodies_read_the_same(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(json.loads, body)


def test_bad_json_is_explained_by_the_json_module() -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting"):
        parse_json(b'{"a": }')


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"1", b"0", b"9", b"12345", b"/", b":", b"\xb2", b"a", b'"']), max_size=60
    )
)
def test_the_digit_run_is_found_as_the_expression_finds_it(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    assert orjson_may_differ(raw) == (re.search(rb"\d{19}", raw) is not None)
