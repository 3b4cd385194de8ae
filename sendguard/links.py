"""Where a message points: the hosts of its links and of what it embeds.

A reviewer who approved a text approved where it sends people too: the same words with a link
to another domain, or an image from a new host, are changed copy. The content fingerprint
(content.py) is blind to links (it strips markup and tracking parameters), so a message has a
second fingerprint, its link targets: the set of `(kind, host)` pairs, where kind is

- `link`: what a reader clicks or submits to (`<a href>`, `<area href>`, `<form action>`, a
  bare URL in the text);
- `embed`: what a mail client fetches (`src` of `<img>`, `<iframe>`, `<video>`, `<source>`,
  `<script>`; `<link href>`; `srcset`, `background`, `poster`; CSS `url(...)`);
- `mailto`: a `mailto:` link, by the domain of its address;
- `attachment`: a MIME part that is not text (a PDF, an image, an `application/octet-stream`
  file whatever it holds), by its file name (RFC 2231 or 2047 decoded; its content type if it
  has none) and the first 16 hex digits of the SHA-256 of its decoded bytes (`attachment`):
  `offer.pdf@sha256:…`.
  Text parts, attached or not, are the text fingerprint's (content.py).

Hosts, not paths: ESPs' click-tracking and unsubscribe links carry per-recipient tokens in
the path, and a set, not a count: personalised recommendations vary how many links there are.
A URL carried in a link's path or query (a redirect: `https://t.example/r?u=https%3A%2F%2F...`)
is one more target of the same kind: where the redirect sends the reader.
Hosts are lowercased and IDNA-encoded (punycode), so `Shop.Example`, `shop.example.` and a
Unicode host and its `xn--` form are one host. Relative URLs (no host) count for nothing.

The stored form (`encode`) is the sorted pairs as `kind:host`, one space between; past
MAX_LISTED pairs, the first MAX_LISTED and `+N:<hash of all>`, so two sets compare equal iff
their stored forms do, and a reviewer can be told what changed (`describe_change`).
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

Target = tuple[str, str]
"""A (kind, host) pair: kind is `link`, `embed`, `mailto` or `attachment` (whose "host" is
a file name and a digest)."""

MAX_LISTED = 100
MAX_NAME = 100  # an attachment's file name is kept to its first 100 characters
_DIGEST = "@sha256:"
# An attachment's name in the stored form: every character but whitespace, `%` and controls
# as it is, those percent-encoded (the stored form separates its entries by spaces).
_NAME_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def attachment(name: str, data: bytes) -> Target:
    """The target of an attached file named `name` whose decoded bytes are `data`."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return ("attachment", f"{quote(name[:MAX_NAME], safe=_NAME_SAFE)}{_DIGEST}{digest}")


def what_changed(approved: str, now: str) -> str:
    """`links`, `attachments` or `links and attachments`: what differs between two stored
    forms (`links` when the difference cannot be seen, past MAX_LISTED)."""
    changed = set(decode(approved)) ^ set(decode(now))
    files = any(kind == "attachment" for kind, _ in changed)
    if files and all(kind == "attachment" for kind, _ in changed):
        return "attachments"
    return "links and attachments" if files else "links"


def _described(kind: str, host: str) -> str:
    """One target for a reviewer: `link host shop.example`, `attachment offer.pdf
    (sha256:0123456789abcdef)`."""
    if kind != "attachment":
        return f"{kind} host {host}"
    name, _, digest = host.rpartition(_DIGEST)
    return f"attachment {unquote(name)} (sha256:{digest})"


# The attributes that name a URL, found in the lowercased markup by `str.find` (a regular
# expression of them, in any case, tries every position of the markup: 7x the instructions),
# then the value after them, double-, single- or unquoted.
_URL_ATTRIBUTES = ("href", "src", "background", "poster", "action")  # "src" finds "srcset" too
_VALUE = re.compile(r"(set)?[ \t\r\n]*=[ \t\r\n]*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+))")
_TAG_NAME = re.compile(r"<[ \t\r\n]*([a-zA-Z][a-zA-Z0-9]*)")
_CSS_URL = re.compile(r"url\(\s*(?:\"([^\"]*)\"|'([^']*)'|([^)\s]*))", re.IGNORECASE)
# A bare URL in text, as content.py finds them, and a bare mailto: address.
_BARE = re.compile(r"https?://[^\s\"'<>)]+|mailto:[^\s\"'<>)]+", re.IGNORECASE)
# A URL's host in one match, as browsers read one (the WHATWG URL standard): `http`, `https`,
# `ftp`, `ws` and `wss` (any case) take any number of slashes or backslashes after the colon,
# none too (`https:///evil.example`, `https:\\evil.example` and `https:evil.example` all go
# to evil.example); another scheme has a host only with two of them (either way round); a
# scheme-relative `//` has one. Then the authority up to `/`, `?`, `#` or `\`, less any
# `user@` (up to its last `@`), is the host with its port. Anything else (`data:`, `cid:`,
# `tel:`, `javascript:`, a relative path) names no host and does not match.
# A `mailto:` (any case of ASCII letters, as a scheme) is told apart in the same match.
_HOST_OF = re.compile(
    r"(?:([mM][aA][iI][lL][tT][oO]:)"
    r"|(?:[hH][tT][tT][pP][sS]?|[fF][tT][pP]|[wW][sS][sS]?):[/\\]*"
    r"|[a-zA-Z][a-zA-Z0-9+.-]*:[/\\][/\\]|//)"
    r"(?:[^/?#\\]*@)?([^/?#\\@]*)"
)
# What a browser strips from both ends of a URL (C0 controls and the space), and removes
# from anywhere in it (tab and line breaks: `ht&#9;tps://` is `https://`).
_BLANK = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = re.compile("[\t\n\r]")
_PORT = re.compile(r":[0-9]*$")
# A URL carried inside another's path or query (decoded), up to the next parameter.
_NESTED = re.compile(r"[hH][tT][tT][pP][sS]?:[/\\]*[^&\s\"'<>]+")
# Tags whose `href` loads something rather than being clicked.
_EMBEDDING_HREF = frozenset({"link"})


def targets_of_html(source: str) -> frozenset[Target]:
    """The link targets in the markup of an HTML part (decoded, markup and entities intact):
    URL attributes and CSS `url(...)`. Bare URLs in its text are `targets_of_text`'s."""
    if len(source) > _RECENT_HTML:
        return _targets_of_html(source)
    found = _recent.get(source)
    if found is None:
        found = _recent[source] = _targets_of_html(source)
        if len(_recent) > _RECENT:
            _recent.pop(next(iter(_recent), source), None)  # the oldest (another thread may too)
    return found


# The targets of the last HTML sources seen: a blast sends the same HTML to every recipient in
# messages of their own, and reading its links again costs some 330,000 instructions for a
# 1.8 KB newsletter with 17 URLs, a look-up here a few thousand (the source's hash and, when
# found, a comparison: docs/performance.md). It pays for identical copy only: HTML that
# differs by one character (a personalised greeting, a per-recipient token in a link) is a
# miss, a look-up more each.
# Bounded: at most _RECENT sources of at most _RECENT_HTML characters are kept.
_RECENT = 32
_RECENT_HTML = 64 * 1024
_recent: dict[str, frozenset[Target]] = {}


def _targets_of_html(source: str) -> frozenset[Target]:
    found: set[Target] = set()
    # ASCII letters lowered, nothing else: `str.lower` changes the length of some text ("İ" is
    # two characters lowered), and a position found in the lowered markup must be the same in
    # `source`.
    if "=" not in source:
        lowered = ""
    elif source.isascii():  # `lower` is ASCII lowering here
        lowered = source.lower()
    else:
        # ASCII letters lowered through UTF-8 bytes, whose `lower` knows no other letters (and
        # a multi-byte character has no ASCII byte): `translate` with a table costs some
        # 550 instructions a character on text that is not all ASCII, this about 20.
        lowered = source.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
    # Without "link" in the markup no `href` is a `<link>`'s: no tag name to read for each.
    links = "link" in lowered
    for name in _URL_ATTRIBUTES if lowered else ():
        start = lowered.find(name)
        while start >= 0:
            _attribute(found, source, name, start, links)
            start = lowered.find(name, start + len(name))
    # CSS names are in any case (`uRl(`); in a style attribute an editor writes the quotes
    # of `url("...")` as `&quot;`, which are the value's quotes once decoded.
    if "url(" in (lowered if lowered else source.lower()):
        for match in _CSS_URL.finditer(source):
            value = match.group(1) or match.group(2) or match.group(3) or ""
            if value.startswith("&"):
                value = html.unescape(value).strip(_BLANK + "\"'")
            _add(found, "embed", value)
    return frozenset(found)


def _attribute(found: set[Target], source: str, name: str, start: int, links: bool) -> None:
    """Add the target of the attribute `name` at `start` in `source`, if it is one: a name
    of its own (not `data-src`) with a value. `links`: whether "link" is in the markup."""
    if start > 0 and (source[start - 1].isalnum() or source[start - 1] in "-_"):
        return
    value = _VALUE.match(source, start + len(name))
    if value is None:
        return
    is_set, double, single, bare = value.groups()
    url = double or single or bare or ""
    if is_set is not None:
        if name == "src":  # srcset: candidates "url 1x, url 2x"
            for candidate in url.split(","):
                _add(found, "embed", candidate.strip().partition(" ")[0])
        return
    if name == "href":
        # Not asked whether the name stands inside a tag: a `>` in an earlier attribute's value
        # (`title="a>b"`) would hide the link, and `href=` in the text with a URL after it has
        # a bare URL, a link anyway. The last `<` before it names the tag (for `<link href>`).
        embeds = False
        if links:
            opened = source.rfind("<", 0, start)
            tag = _TAG_NAME.match(source, opened) if opened >= 0 else None
            embeds = tag is not None and tag.group(1).lower() in _EMBEDDING_HREF
        _add(found, "link" if not embeds else "embed", url)
    elif name == "action":  # a form's: submitting it sends the reader there
        _add(found, "link", url)
    else:
        _add(found, "embed", url)


def targets_of_text(text: str) -> set[Target]:
    """The link targets of bare URLs (`http(s)://`, `mailto:`) in text as a reader sees it."""
    found: set[Target] = set()
    # Both kinds have a colon, and looking for one character is a memchr: the common text
    # without a URL costs that, not the three searches for the longer strings.
    if ":" not in text or ("://" not in text and "ailto:" not in text and "AILTO:" not in text):
        return found
    for match in _BARE.finditer(text):
        _add(found, "link", match.group(0))
    return found


def _add(found: set[Target], kind: str, url: str, nested: int = 2) -> None:
    """Add the target of `url` (an attribute's value: entities not yet decoded), if it has
    a host, and those of the URLs it carries in its path or query (`_add_nested`), up to
    `nested` levels deep."""
    url = _cleaned(url)
    match = _HOST_OF.match(url)
    # Entities are decoded first, unless the first `&` comes after the character that ends the
    # host: the text before an `&` is the same decoded, and the match reads no further than
    # that character. A click-tracking link's `&amp;` in its query costs nothing then.
    if "&" in url and (match is None or match.group(1) is not None or url.find("&") < match.end()):
        url = _cleaned(html.unescape(url))
        match = _HOST_OF.match(url)
    if match is None:
        return  # relative, or `data:`, `cid:`, `tel:`, `javascript:`...: no host
    if match.group(1) is not None:  # mailto:
        address = url[7:].partition("?")[0].split(",")[0]
        if "@" in address:
            host = _host(address.rpartition("@")[2])
            if host:
                found.add(("mailto", host))
        return
    host = _host(match.group(2))
    if host:
        found.add((kind, host))
    end = match.end()
    # A URL inside has a colon after its scheme: as written, percent-encoded (once: `%3A`,
    # twice: `%253A`) or an entity (`&#58;`, `&colon;`): most URLs carry none (a token's `%3D`
    # is no colon). Searched with `in` in a copy of the rest: `str.find` from an offset costs
    # some 0.7 µs a call in its arguments alone, a regular expression of them 4 µs.
    if nested:
        rest = url[end:]
        if ":" in rest or "3A" in rest or "3a" in rest or "&#" in rest or "&colon;" in rest:
            _add_nested(found, kind, rest, nested - 1)


def _add_nested(found: set[Target], kind: str, rest: str, nested: int) -> None:
    """Add the hosts of URLs inside a URL's path or query (`rest`, after its host): a redirect
    link (`https://t.example/r?u=https%3A%2F%2Fshop.example%2Fp`) sends the reader to the URL
    it carries, so changing that URL changes where the link goes. Entities decoded, then
    percent-encoding undone up to three times (a URL in a query is encoded once, a redirect
    of a redirect twice); each `http(s)://` URL found, up to the next `&` (the next parameter),
    counts as one more target of the same kind (and so do the URLs it carries, `nested` levels
    deep)."""
    if "&" in rest:
        rest = _cleaned(html.unescape(rest))
    for _ in range(3):
        if ":" in rest:
            for match in _NESTED.finditer(rest):
                _add(found, kind, match.group(0), nested)
        if "%" not in rest:
            return
        decoded = unquote(rest)
        if decoded == rest:
            return
        rest = decoded


def _cleaned(url: str) -> str:
    """`url` as a browser reads it before parsing: no C0 control or space at either end, no
    tab or line break anywhere."""
    url = url.strip(_BLANK)
    if "\t" in url or "\n" in url or "\r" in url:
        url = _TAB_OR_NEWLINE.sub("", url)
    return url


@functools.lru_cache(maxsize=1024)
def _host(authority: str) -> str:
    """A host as compared: no port, lowercased, no trailing dot, IDNA (punycode) encoded.
    Memoised: a newsletter names a few hosts many times, and encoding one (IDNA above all)
    costs more than a look-up; bounded, as a message may name any host."""
    if authority.startswith("["):
        return authority.partition("]")[0].lower() + "]"  # an IPv6 literal
    host = _PORT.sub("", authority).rstrip(".")
    if "%" in host:
        host = unquote(host)
    if host.isascii():
        return host.lower()
    try:
        return host.lower().encode("idna").decode("ascii")
    except UnicodeError:
        return host.lower()  # not a valid IDN: compared as written, lowercased


def encode(targets: Iterable[Target]) -> str:
    """The stored form of a set of targets (see the module's docstring)."""
    entries = sorted({f"{kind}:{host}" for kind, host in targets})
    if len(entries) <= MAX_LISTED:
        return " ".join(entries)
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
    return " ".join(entries[:MAX_LISTED]) + f" +{len(entries) - MAX_LISTED}:{digest}"


def decode(stored: str) -> list[Target]:
    """The targets listed in a stored form (at most MAX_LISTED of them)."""
    found: list[Target] = []
    for entry in stored.split():
        if entry.startswith("+"):
            continue
        kind, _, host = entry.partition(":")
        found.append((kind, host))
    return found


def describe_change(approved: str, now: str) -> str:
    """What changed from the approved targets to these, for a reviewer:
    `new link host evil.example; removed link host shop.example`, `new attachment offer.pdf
    (sha256:…)`."""
    before, after = set(decode(approved)), set(decode(now))
    parts = [f"new {_described(*target)}" for target in sorted(after - before)]
    parts += [f"removed {_described(*target)}" for target in sorted(before - after)]
    if not parts:  # the same first MAX_LISTED: the difference is among those past them
        parts.append(f"a different set of hosts past the first {MAX_LISTED}")
    return "; ".join(parts)
