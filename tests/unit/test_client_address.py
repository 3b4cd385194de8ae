"""Where the command line finds the API: a listener on every interface is reached on loopback;
--url, then $SENDGUARD_URL, then the config, then the default."""

from __future__ import annotations

import pytest

from sendguard.client import DEFAULT_URL, api_url, local_url
from sendguard.config import HttpOptions


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("0.0.0.0:8025", "http://127.0.0.1:8025"),
        ("[::]:9000", "http://127.0.0.1:9000"),
        (":::9000", "http://127.0.0.1:9000"),
        ("127.0.0.2:8080", "http://127.0.0.2:8080"),
        ("[::1]:8025", "http://[::1]:8025"),
        ("sendguard.internal:8025", "http://sendguard.internal:8025"),
    ],
)
def test_local_url(listen: str, url: str) -> None:
    assert local_url(listen) == url


def test_api_url_precedence() -> None:
    http = HttpOptions(listen="0.0.0.0:9025")
    env = {"SENDGUARD_URL": "http://env:1"}
    assert api_url("http://flag:1", http, env) == "http://flag:1"
    assert api_url(None, http, env) == "http://env:1"
    assert api_url(None, http, {}) == "http://127.0.0.1:9025"
    assert api_url(None, None, {}) == DEFAULT_URL
