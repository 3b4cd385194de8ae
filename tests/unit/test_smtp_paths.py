"""The address text of MAIL FROM / RCPT TO as the client sent it (never aiosmtpd's rewrite)."""

from __future__ import annotations

import pytest

from sendguard.ingress.smtp import raw_path


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
