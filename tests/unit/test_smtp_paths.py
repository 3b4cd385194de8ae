"""The address text of MAIL FROM / RCPT TO as the client sent it (never aiosmtpd's rewrite)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from sendguard.ingress.smtp import _PLAIN_PATH, _closing, _Connection, raw_path


@pytest.mark.parametrize(
    ("arg", "keyword", "path"),
    [
        ("TO:<a@example.org>", "TO:", "a@example.org"),
        ("to: <a@example.org> NOTIFY=NEVER", "TO:", "a@example.org"),
        ("TO:<bad address@example.org>", "TO:", "bad address@example.org"),
        ('TO:<"a>b"@example.org>', "TO:", '"a>b"@example.org'),
        ('TO:<"a\\">b"@example.org>', "TO:", '"a\\">b"@example.org'),
        ("TO:<@relay.example:a@example.org>", "TO:", "@relay.example:a@example.org"),
        ("FROM:<>", "FROM:", ""),
        ("FROM:<shop@example.com> SMTPUTF8", "FROM:", "shop@example.com"),
        ("FROM:shop@example.com BODY=8BITMIME", "FROM:", "shop@example.com"),
        ("TO:<a@example.org", "TO:", "a@example.org"),
        ("FROM:<a@example.org>", "TO:", None),
        (None, "TO:", None),
    ],
)
def test_raw_path(arg: str | None, keyword: str, path: str | None) -> None:
    assert raw_path(arg, keyword) == path


# --- the plain path, read without the header parser -------------------------------------------

_ATEXT = "abzAZ09!#$%&'*+/=?^_`{|}~-"
_TRICKY = _ATEXT + '.@<>()"\\[]:;, \té\x00\r'


def _read(method: Callable[..., tuple[str | None, str | None]], arg: str) -> tuple[object, ...]:
    """(address, parameters, address text as sent) as `method` (a `_getaddr`) reads `arg`, or
    the exception it raised (the parser fails on some arguments; aiosmtpd then answers 451)."""
    connection = SimpleNamespace(local_part_limit=0, path_sent=None)
    try:
        address, rest = method(connection, arg)
    except Exception as exc:  # compared, whatever it is
        return (type(exc),)
    return address, rest, connection.path_sent


@st.composite
def path_arguments(draw: st.DrawFn) -> str:
    """What follows `FROM:` / `TO:`, stripped as aiosmtpd strips it: mostly near-plain paths
    (`<local@domain>` and parameters), some anything at all."""
    if draw(st.booleans()):
        return draw(st.text(_TRICKY, max_size=30)).strip()
    local = draw(st.text(_ATEXT + ".", max_size=8) | st.text(_TRICKY, max_size=4))
    domain = draw(st.text(_ATEXT + ".", max_size=8) | st.text(_TRICKY, max_size=4))
    tail = draw(
        st.sampled_from(["", " ", "\t", "(x)", " (x) SIZE=1", "SIZE=1", " SIZE=1", " \tA B=(1)"])
    )
    return f"<{local}@{domain}>{tail}".strip()


@settings(max_examples=1000, deadline=None)
@given(path_arguments())
def test_a_plain_path_reads_as_the_header_parser_reads_it(arg: str) -> None:
    # aiosmtpd's own _getaddr (the header parser), and the text as sent as raw_path reads it.
    expected = _read(SMTP._getaddr, arg)
    if arg.startswith("<") and _closing(arg) is None:
        # Refused where the header parser reads an address all the same: `("", "")` is
        # aiosmtpd's 501 syntax error (tests/e2e/test_smtp_replies.py).
        expected = ("", "", raw_path("TO:" + arg, "TO:"))
    elif len(expected) > 1:
        expected = (*expected[:2], raw_path("TO:" + arg, "TO:"))
    assert _read(_Connection._getaddr, arg) == expected


@pytest.mark.parametrize(
    ("arg", "read"),
    [
        ("<a@example.org>", ("a@example.org", "", "a@example.org")),
        (
            "<a.b+c@x.example.org> SIZE=100 BODY=8BITMIME",
            ("a.b+c@x.example.org", "SIZE=100 BODY=8BITMIME", "a.b+c@x.example.org"),
        ),
        ("<a@example.org> (comment) SIZE=1", ("a@example.org", "SIZE=1", "a@example.org")),
        ("<a..b@example.org>", ("a..b@example.org", "", "a..b@example.org")),
        ("<a@example.org>\tSIZE=1", ("a@example.org", "SIZE=1", "a@example.org")),
        ("<>", ("<>", "", "")),
        ("", ("", "", "")),
    ],
)
def test_paths_read_as_before(arg: str, read: tuple[object, ...]) -> None:
    assert _read(_Connection._getaddr, arg) == read
    assert _read(SMTP._getaddr, arg)[:2] == read[:2]


def test_the_plain_path_is_what_clients_send() -> None:
    for arg in ("<a@example.org>", "<news+x@mail.example.com> SIZE=2048 BODY=8BITMIME"):
        assert _PLAIN_PATH.fullmatch(arg) is not None
