"""The parameters of MAIL and RCPT (RFC 5321 4.1.2 `esmtp-param`), read as the grammar says.

aiosmtpd takes a keyword for letters and digits only, so `MT-PRIORITY=3` or `X-TAG=a`, which
RFC 5321 allows (`esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`), was a `501` syntax
error where it is a parameter this server does not implement: `555 5.5.4` (RFC 5321 4.1.1.11).
A value is printable ASCII but `=` (RFC 6531 3.3 adds UTF-8), and not empty.

`AUTH=` on MAIL (RFC 4954 5) is taken where AUTH is offered, and not passed on: RFC 4954 lets a
server that does not vouch for the submitter act as if `AUTH=<>` was given, and an upstream is
not told who submitted. Elsewhere it is a parameter like any other this server does not know.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["read_parameters"]

_PARAMETER = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([^\x00-\x20=\x7f]+))?")
_XTEXT = re.compile(r"<>|(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
"""RFC 3461 4: xtext, `+` only as `+HH`; or `<>` (RFC 4954 5: no submitter vouched for)."""


def read_parameters(options: Sequence[str], *, auth: bool = False) -> dict[str, str | bool] | None:
    """aiosmtpd's `_getparams`: keyword to value (True without `=`), None on a syntax error.

    `auth`: the command is MAIL where AUTH is offered; an `AUTH=` is checked and left out.
    """
    result: dict[str, str | bool] = {}
    for option in options:
        match = _PARAMETER.fullmatch(option)
        if match is None:
            return None
        keyword, value = match[1], match[2]
        if auth and keyword.upper() == "AUTH":
            if value is None or _XTEXT.fullmatch(value) is None:
                return None
            continue
        result[keyword] = True if value is None else value
    return result
