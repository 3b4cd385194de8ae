"""MAIL/RCPT parameters by RFC 5321 4.1.2, and enhanced codes on aiosmtpd's replies."""

from __future__ import annotations

import pytest

from sendguard.ingress.smtp_params import read_parameters
from sendguard.ingress.smtp_replies import enhanced


@pytest.mark.parametrize(
    ("options", "read"),
    [
        ([], {}),
        (["NOTIFY=SUCCESS,FAILURE"], {"NOTIFY": "SUCCESS,FAILURE"}),
        (["MT-PRIORITY=3"], {"MT-PRIORITY": "3"}),
        (["SMTPUTF8"], {"SMTPUTF8": True}),
        (["ORCPT=rfc822;ann+2B1@example.org"], {"ORCPT": "rfc822;ann+2B1@example.org"}),
        (["X-FOO="], None),  # a value is not empty
        (["X-FOO=a=b"], None),  # nor holds "="
        (["-FOO=a"], None),  # a keyword starts with a letter or digit
        (["FO_O=a"], None),
    ],
)
def test_parameters_follow_the_rfc_5321_grammar(
    options: list[str], read: dict[str, str | bool] | None
) -> None:
    assert read_parameters(options) == read


def test_auth_is_taken_only_where_offered_and_checked_as_xtext() -> None:
    assert read_parameters(["AUTH=<>", "SIZE=10"], auth=True) == {"SIZE": "10"}
    assert read_parameters(["AUTH=ann+2B1@example.org"], auth=True) == {}
    assert read_parameters(["AUTH=a+b"], auth=True) is None  # "+" only as +HH
    assert read_parameters(["AUTH"], auth=True) is None
    assert read_parameters(["AUTH=<>"]) == {"AUTH": "<>"}  # not offered: a parameter like any


@pytest.mark.parametrize(
    ("status", "reply"),
    [
        ("221 Bye", "221 2.0.0 Bye"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("220 mx.example sendguard", "220 mx.example sendguard"),  # the greeting
        ("250 mx.example", "250 mx.example"),  # HELO's answer
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("250 2.1.0 Ok", "250 2.1.0 Ok"),
        ("552 Error: Too much mail data", "552 5.3.4 Message too big: over smtp.max_message_size"),
    ],
)
def test_aiosmtpd_replies_get_postfix_enhanced_codes(status: str, reply: str) -> None:
    assert enhanced(status, "mx.example") == reply


def test_a_555_names_the_refused_parameters_as_sent() -> None:
    status = "555 MAIL FROM parameters not recognized or not implemented"
    assert enhanced(status, "mx", ["SIZE=10", "ret=hdrs"]) == (
        "555 5.5.4 Unsupported option: ret=hdrs (DSN is not offered)"
    )
    status = "555 RCPT TO parameters not recognized or not implemented"
    assert enhanced(status, "mx", ["X-TAG=\u00e4"]) == "555 5.5.4 Unsupported option: X-TAG=?"
