"""Strict validation of envelope addresses: refuse what is malformed, never rewrite it."""

from __future__ import annotations

import re

from sendguard.errors import InvalidAddress

MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 254  # RFC 5321 4.5.3.1.3 (256 octets including the angle brackets)

# dot-atom local part (RFC 5322 atext) or a quoted string without control characters.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_address(address: str) -> str:
    """Return `address` unchanged if it is a valid mailbox, else raise InvalidAddress."""
    if _CONTROL.search(address):
        raise InvalidAddress("address contains a control character (CR, LF, NUL, ...)")
    if len(address.encode("utf-8")) > MAX_PATH:
        raise InvalidAddress(f"address is longer than {MAX_PATH} octets")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress("address must have the form local-part@domain")
    if len(local.encode("utf-8")) > MAX_LOCAL:
        raise InvalidAddress(f"local part is longer than {MAX_LOCAL} octets")
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)):
        raise InvalidAddress("local part is not a valid dot-atom or quoted string")
    _validate_domain(domain)
    return address


def _validate_domain(domain: str) -> None:
    if domain.startswith("[") and domain.endswith("]"):
        raise InvalidAddress("address literals are not accepted; use a domain name")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidAddress(f"domain {domain!r} is not a valid host name") from exc
    if len(ascii_domain) > MAX_DOMAIN:
        raise InvalidAddress(f"domain is longer than {MAX_DOMAIN} octets")
    labels = ascii_domain.rstrip(".").split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidAddress(f"domain {domain!r} is not a valid host name")


def recipient_key(address: str) -> str:
    """The form under which a recipient's history is counted: case folded, as people expect."""
    return address.lower()


def domain_of(address: str) -> str:
    """The lower-cased domain part of `address`."""
    return address.rpartition("@")[2].lower()
