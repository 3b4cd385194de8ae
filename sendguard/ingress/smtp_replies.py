"""Enhanced status codes (RFC 2034, RFC 3463) on the SMTP ingress's every reply.

sendguard's own replies carry one (`250 2.0.0 Ok: queued as ...`, `553 5.1.3 ...`) and EHLO
offers ENHANCEDSTATUSCODES, so the replies aiosmtpd writes itself must carry one too: RFC 2034
3 asks it of every reply but the greeting and the replies to HELO and EHLO (a refusal of a bare
EHLO has one, as Postfix's). aiosmtpd writes
`555 RCPT TO parameters not recognized or not implemented`, `501 Syntax: ...`,
`503 Error: need MAIL command`, `221 Bye` and the like without one; `enhanced` adds the code
Postfix gives the same reply, by the basic code (3xx intermediate replies stay as they are:
RFC 2034 leaves them, and Postfix writes `354` and `334` without one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["CODED", "enhanced", "reply_text"]

_DETAIL = {
    "221": "2.0.0",  # QUIT
    "250": "2.0.0",  # NOOP, RSET, HELP
    "252": "2.0.0",  # VRFY
    "454": "4.7.0",  # TLS not available
    "500": "5.5.2",  # command not recognized, command line too long
    "501": "5.5.4",  # syntax error in the arguments
    "502": "5.5.1",  # command not implemented (EXPN)
    "503": "5.5.1",  # bad sequence of commands
    "504": "5.5.4",
    "530": "5.7.0",  # STARTTLS first
    "552": "5.3.4",
    "554": "5.7.0",  # refused for lack of security
    "555": "5.5.4",  # parameter not recognized or not implemented
}
"""The enhanced code of a basic code, for aiosmtpd's replies that have none (as Postfix's)."""

CODED = frozenset({"2.", "4.", "5."})
"""`status[4:6]` of a reply that has an enhanced code already."""

_DSN_PARAMETERS = frozenset({"NOTIFY", "ORCPT", "RET", "ENVID"})
_MAIL_PARAMETERS = frozenset({"BODY", "SIZE", "SMTPUTF8"})
"""What aiosmtpd takes on MAIL (AUTH= never reaches a 555 where it is taken); RCPT takes none."""

_UNSAFE = re.compile(r"[^\x20-\x7e]")


def reply_text(text: str, limit: int = 300) -> str:
    """Text safe to put in an SMTP reply line: printable ASCII, bounded."""
    return _UNSAFE.sub("?", text)[:limit]


def enhanced(status: str, hostname: str, parameters: Sequence[str] = ()) -> str:
    """`status` with an enhanced status code if it has none and should have one.

    `hostname` is the server's: aiosmtpd answers HELO `250 <hostname>`, which RFC 2034 keeps
    free of codes. `parameters` are those of the MAIL or RCPT command read last, as the client
    wrote them, to name the ones a 555 refuses (as Postfix: `555 5.5.4 Unsupported option: X`).
    """
    if status[4:6] in CODED or len(status) < 4:
        return status
    code = status[:3]
    if code == "220":
        # The greeting keeps its form; the answer to STARTTLS is Postfix's.
        return "220 2.0.0 Ready to start TLS" if status == "220 Ready to start TLS" else status
    detail = _DETAIL.get(code)
    if detail is None or status[4:] == hostname:
        return status
    if code == "555":
        return _unsupported(status, parameters)
    if status.startswith("501 Error: BODY"):
        # aiosmtpd's answer to `BODY=BINARYMIME`: a value EHLO does not offer (no CHUNKING,
        # no BINARYMIME; RFC 3030), so a parameter this server does not implement (RFC 5321
        # 4.1.1.11), not a syntax error.
        body = [p for p in parameters if _keyword(p) == "BODY"]
        return f"555 5.5.4 Unsupported option: {reply_text(' '.join(body), 200)}"
    if code == "552":
        # aiosmtpd's size replies (to MAIL's SIZE= and after too much data).
        return "552 5.3.4 Message too big: over smtp.max_message_size"
    return f"{code} {detail} {status[4:]}"


def _unsupported(status: str, parameters: Sequence[str]) -> str:
    known = _MAIL_PARAMETERS if status.startswith("555 MAIL") else frozenset()
    refused = [p for p in parameters if _keyword(p) not in known]
    if not refused:
        return f"555 5.5.4 {status[4:]}"
    text = reply_text(" ".join(refused), 200)
    # RFC 3461 4: a client uses these only when EHLO offers DSN, which sendguard does not.
    hint = " (DSN is not offered)" if any(_keyword(p) in _DSN_PARAMETERS for p in refused) else ""
    return f"555 5.5.4 Unsupported option: {text}{hint}"


def _keyword(parameter: str) -> str:
    return parameter.partition("=")[0].upper()
