"""The store's JSON columns: written with orjson, read back as the json module wrote them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sendguard.headers import Headers
from sendguard.store.codec import dump_headers, dump_json, load_headers

_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_VALUES)
def test_dump_json_reads_back_as_the_json_module_wrote_it(value: Any) -> None:
    # Any text (lone surrogates included) and any integer (beyond 64 bits included): what
    # orjson refuses is written by the json module.
    assert json.loads(dump_json(value)) == json.loads(json.dumps(value, ensure_ascii=False))


def test_what_orjson_refuses_is_written_as_before() -> None:
    for value in (["\udc80 lone surrogate"], [2**70], {"n": -(2**64)}):
        assert dump_json(value) == json.dumps(value, ensure_ascii=False)


def test_headers_round_trip_unicode_unescaped() -> None:
    headers = Headers((("Subject", "Grüße, 日本"), ("X-Empty", "")))
    text = dump_headers(headers)
    assert "Grüße" in text  # stored as UTF-8 text, not \u escapes, as before
    assert load_headers(text) == headers
