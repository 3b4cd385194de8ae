"""The `from`, `to`, `cc` and `bcc` of a JSON send: an address, or a mailbox with a display name.

`"from": "Shop <shop@example.com>"` is what every ESP's API and every mail tool takes (RFC 5322
3.4 `name-addr`): the header is written as given, the envelope gets the address. The address
is checked as written between the angle brackets (never as the email package rewrites it), by
the same rules as a bare one. RFC 5322's obsolete forms that readers must take (`J. Smith
<j@example.com>`, a period in the name) are taken. A display name with a comma or another
special character must be quoted (`"Doe, Ann" <ann@example.org>`), or it would read as two
mailboxes in the header.

The null sender `<>` is an envelope matter (a bounce still has a From header with an address,
RFC 5322 3.6.2): `?from=<>` gives it, as `MAIL FROM:<>` does over SMTP.
"""

from __future__ import annotations

from email._header_value_parser import get_mailbox
from email.errors import HeaderParseError, ObsoleteHeaderDefect

from sendguard.ingress.payloads import BadRequest, address_in, is_single_line

__all__ = ["NULL_SENDER", "mailbox_address", "sender_domain"]

NULL_SENDER = "<>"
"""`?from=<>`: the null envelope sender (RFC 5321 4.5.5), a bounce's."""

_NULL_SENDER_HINT = (
    "the From header needs an address (RFC 5322 3.6.2); a bounce has one too (e.g."
    " MAILER-DAEMON@your.domain): send it with ?from=<> for the null envelope sender"
)


def mailbox_address(value: str, field: str) -> str:
    """The address of `value`, an address or `Display Name <address>`; BadRequest names
    `field` and what to write instead."""
    # A bare address may hold `<` or `>` in a quoted local part (`"a>b"@example.com`); a
    # mailbox with a display name ends with its `>`.
    if ("<" not in value and ">" not in value) or (
        value.startswith('"') and not value.rstrip().endswith(">")
    ):
        if not value.strip() and field == "from":
            raise BadRequest(f"from: {_NULL_SENDER_HINT}", field)
        address_in(value, field)
        return value
    if value.strip() == NULL_SENDER:
        hint = _NULL_SENDER_HINT if field == "from" else "<> is not a recipient"
        raise BadRequest(f"{field}: {hint}", field)
    try:
        mailbox, rest = get_mailbox(value)
    except HeaderParseError:
        mailbox, rest = None, value
    written = value[value.find("<") + 1 : value.rfind(">")]
    if (
        mailbox is None
        or rest.strip()
        or any(not isinstance(defect, ObsoleteHeaderDefect) for defect in mailbox.all_defects)
        or not is_single_line(value)
        or value.count("<") != 1
        or mailbox.addr_spec != written
    ):
        raise BadRequest(
            f"{field}: write an address (ann@example.org) or one mailbox with a display name"
            " (Ann <ann@example.org>; quote a name with a comma or other special character:"
            ' "Doe, Ann" <ann@example.org>)',
            field,
        )
    address_in(written, field)
    return written


def sender_domain(value: str) -> str | None:
    """The domain of the address in a `from` value (for the Message-ID), None without one."""
    if "<" in value:
        value = value[value.rfind("<") + 1 :].partition(">")[0]
    return value.rpartition("@")[2] or None
