"""The marks that make a null-sender message mail sent to a list, not a bounce
(`sendguard.intake._bulk`); end to end in tests/e2e/test_policy_frequency.py."""

from __future__ import annotations

import pytest

from sendguard.headers import Headers
from sendguard.intake import _bulk


def _headers(*lines: str) -> Headers:
    return Headers.parse(("\r\n".join(["Subject: x", *lines]) + "\r\n").encode())


@pytest.mark.parametrize(
    ("lines", "bulk"),
    [
        ((), False),
        (("List-Unsubscribe: <mailto:u@example.com>",), True),
        (("List-Unsubscribe-Post: List-Unsubscribe=One-Click",), True),
        (("Precedence: bulk",), True),
        (("Precedence:  LIST ",), True),
        (("Precedence: first-class",), False),
        # An auto-reply (RFC 3834) marks itself bulk or junk so no responder answers it.
        (("Precedence: bulk", "Auto-Submitted: auto-replied (vacation)"), False),
        (("Precedence: junk", "Auto-Submitted: Auto-Generated"), False),
        # `no` says a person sent it: the Precedence counts, with a comment or without.
        (("Precedence: bulk", "Auto-Submitted: no"), True),
        (("Precedence: bulk", "Auto-Submitted: No (written by hand)"), True),
        # A list's unsubscribe link is no auto-reply's, whatever Auto-Submitted says.
        (("List-Unsubscribe: <mailto:u@example.com>", "Auto-Submitted: auto-generated"), True),
    ],
)
def test_bulk_marks(lines: tuple[str, ...], bulk: bool) -> None:
    assert _bulk(_headers(*lines)) is bulk
