"""Strict validation of envelope addresses: refuse what is malformed, never rewrite it.

The rules are email-validator's (syntax only, no DNS): RFC 5321/5322 dot-atoms, IDNA 2008
domains with a period, no special-use names (`localhost`, `.local`, `.test`, ...), no address
literals, no trailing dot, and no invisible or unsafe Unicode (zero-width spaces, soft hyphens,
bidi controls). Each of those let one person be written several ways and so count as several
people for caps and suppressions.

A quoted local part (RFC 5321 4.1.2 `Quoted-string`: `"a>b"@example.com`, `"a b"@...`,
`"a\\"b"@...`) is a mailbox some systems really have, so it is taken; its key is the quoted
string's content, quoted again only where a dot-atom cannot say it, so `"ann"@example.com` and
`ann@example.com` are one person (RFC 5321: the forms are equivalent).

An accepted address is used exactly as it came; `recipient_key` is the one form under which a
person is counted (case folded, NFC, the domain as IDNA U-labels, so `ÄNN@Bücher.example`,
`änn@BÜCHER.example` and `änn@xn--bcher-kva.example` are one person).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import idna
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from sendguard.errors import InvalidAddress
from sendguard.validation import any_case

MAX_PATH = 254  # RFC 5321 4.5.3.1.3 (256 octets including the angle brackets)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


ADDRESS_PATTERN = (
    "^(?!.*\\.(?:"
    + "|".join(any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
    + ")$)[^@\\s]+@[^@\\s]+\\.[^@\\s.]*[A-Za-z\\u0080-\\uffff]$"
)
"""What `validate_address` needs beyond `format: email`, as a JSON-schema pattern: a domain
with a dot whose last label ends in a letter, not under a special-use name (`.test`, ...)."""


_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rf"@(?:{_LABEL}\.)+(?:[A-Za-z0-9][A-Za-z0-9-]*)?[A-Za-z]"
)
"""A plain ASCII address: a dot-atom local part (RFC 5322 atext), a domain of LDH labels with
a period, the last label ending in a letter."""


def _plainly_valid(address: str) -> bool:
    """True for an address that email-validator accepts under `validate_address`'s options,
    decided without it: plain ASCII (`_PLAIN_ADDRESS`), within every length limit, no `--` in
    the domain (so no Punycode label and no reserved `ab--` label to check), not under a
    special-use name. False says nothing: the address is then judged in full.

    What most addresses are, and cheap: email-validator spends ~90 µs on one (a Unicode
    normalisation per character, UTS-46 remapping), and a newsletter has a new address per
    message. tests/unit/test_parsing.py checks both judge alike over generated addresses.
    """
    if len(address) > MAX_PATH or not _PLAIN_ADDRESS.fullmatch(address):
        return False
    local, _, domain = address.rpartition("@")
    if len(local) > 64 or "--" in domain:
        return False
    if len(domain) > 63 and any(len(label) > 63 for label in domain.split(".")):
        return False
    return not f".{domain.lower()}".endswith(_special_suffixes())


_special: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def _special_suffixes() -> tuple[str, ...]:
    """`.name` for every special-use name. The list is read each time: a program may change
    it (email-validator documents that); the suffixes are made again only when it changed
    (making them for every new address cost some 4,000 instructions)."""
    global _special  # noqa: PLW0603 - one entry, replaced whole (a tuple: no torn read)
    names = tuple(SPECIAL_USE_DOMAIN_NAMES)
    known = _special
    if names != known[0]:
        known = _special = (names, tuple(f".{name}" for name in names))
    return known[1]


_known_valid: ContextVar[set[str] | None] = ContextVar("known_valid", default=None)


@contextmanager
def remembering_valid_addresses() -> Iterator[None]:
    """Within this block (and the tasks it starts), an address found valid is never checked
    again. For a replay: its tens of thousands of recipients come round again after more
    others than `validate_address`'s bounded cache keeps, so each of them missed it every
    time (a tenth of a replay of 100,000 messages to 20,000 people). Valid addresses only;
    everything is forgotten at the end of the block."""
    token = _known_valid.set(set())
    try:
        yield
    finally:
        _known_valid.reset(token)


def validate_address(address: str) -> str:
    """Return `address` unchanged if it is a valid mailbox, else raise InvalidAddress."""
    known = _known_valid.get()
    if known is None:
        return _validate(address)
    if address not in known:
        known.add(_validate(address))
    return address


# Validation is pure and costs ~100 µs an address (email-validator's IDNA checks), while the
# same senders and recipients come again and again. Only valid addresses are cached: an
# invalid one raises every time.
@functools.lru_cache(maxsize=8192)
def _validate(address: str) -> str:
    if _plainly_valid(address):
        return address
    return _validate_in_full(address)


def _validate_in_full(address: str) -> str:
    if _CONTROL.search(address):
        raise InvalidAddress("address contains a control character (CR, LF, NUL, ...)")
    try:
        size = len(address.encode("utf-8"))
    except UnicodeEncodeError:  # undecodable bytes an SMTP client sent (surrogate escapes)
        raise InvalidAddress("address is not valid UTF-8") from None
    if size > MAX_PATH:
        raise InvalidAddress(f"address is longer than {MAX_PATH} octets")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress("address must have the form local-part@domain")
    if domain.startswith("["):
        raise InvalidAddress("address literals are not accepted; use a domain name")
    try:
        validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            globally_deliverable=True,
            strict=True,  # RFC 5321's 64-octet local part, which 2.3 made optional
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    return address


def needs_smtputf8(address: str) -> bool:
    """True if `address` can only be sent with SMTPUTF8 (RFC 6531): it is not all ASCII."""
    return not address.isascii()


def recipient_key(address: str) -> str:
    """The form under which a recipient's history is counted: one per person, as people expect.

    Never raises: a string that is not a valid address (say, a search term) is only lower-cased.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    quoted = local.startswith('"')
    if address.isascii() and "xn--" not in domain.lower() and not quoted:
        return address.lower()  # the common case, as keys were always written
    if quoted:
        local = _local_key(local)
    return f"{unicodedata.normalize('NFC', local).lower()}@{_domain_key(domain)}"


_ATOM = r"[^\x00-\x20\x7f()<>\[\]:;@\\,.\"]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
"""A dot-atom local part (RFC 5322 atext, RFC 6532's UTF-8 too)."""
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _local_key(local: str) -> str:
    """A quoted local part as one person's key: its content, re-quoted (`\\` before `"` and
    `\\` only) unless it is a dot-atom, so `"ann"` is `ann` and `"a\\>b"` is `"a>b"`."""
    if len(local) < 2 or not local.endswith('"'):
        return local
    content = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    if _DOT_ATOM.fullmatch(content):
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _domain_key(domain: str) -> str:
    try:
        return idna.decode(idna.encode(domain, uts46=True)).lower()
    except (idna.IDNAError, UnicodeError):
        return unicodedata.normalize("NFC", domain).lower()


def domain_of(address: str) -> str:
    """The domain part of `address` as in its `recipient_key`."""
    return recipient_key(address).rpartition("@")[2]
