"""The review page's own origins: the one a request came to and `review.public_url`'s, as
browsers write them in `Origin` (lowercase, no default port)."""

from __future__ import annotations

import pytest

from sendguard.review_page.guard import Provenance, from_here, origin_of, public_origin


@pytest.mark.parametrize(
    ("scheme", "host", "origin"),
    [
        ("https", "Review.Example:443", "https://review.example"),
        ("http", "127.0.0.1:80", "http://127.0.0.1"),
        ("https", "review.example:80", "https://review.example:80"),
        ("http", "[::1]:8025", "http://[::1]:8025"),
    ],
)
def test_origin_as_browsers_write_it(scheme: str, host: str, origin: str) -> None:
    assert origin_of(scheme, host) == origin


def test_public_origin_drops_the_path() -> None:
    assert public_origin("https://review.example/sendguard/") == "https://review.example"
    assert public_origin("HTTPS://Review.Example:443") == "https://review.example"
    assert public_origin(None) is None


@pytest.mark.parametrize(
    ("origin", "referer", "expected"),
    [
        ("https://review.example", None, Provenance.HERE),
        ("http://127.0.0.1:8025", None, Provenance.HERE),
        ("http://review.example", None, Provenance.ELSEWHERE),  # the other scheme
        (None, "https://review.example/review", Provenance.HERE),
        (None, "https://review.example.evil.example/", Provenance.ELSEWHERE),
    ],
)
def test_either_origin_is_here(
    origin: str | None, referer: str | None, expected: Provenance
) -> None:
    here = {"http://127.0.0.1:8025", "https://review.example"}
    assert from_here(here, origin, referer, None) is expected
