"""Where a message points: the hosts of its links and of what it embeds.

A reviewer who approved a text approved where it sends people too: the same words with a link
to another domain, or an image from a new host, are changed copy. The content fingerprint
(content.py) is blind to links (it strips markup and tracking parameters), so a message has a
second fingerprint, its link targets: the set of `(kind, host)` pairs, where kind is

- `link`: what a reader clicks, submits to or is sent to (`<a href>`, `<area href>`, SVG's
  `<a xlink:href>`, `<form action>`, AMP's `action-xhr`, a button's `formaction`, `<a ping>`,
  a `<meta>` refresh's URL, `<base href>`, a bare URL in the text);
- `embed`: what a mail client fetches (`src` of `<img>`, `<iframe>`, `<video>`, `<source>`,
  `<script>`, `<embed>`, `<amp-img>`...; `<object data>`; `<link href>` and, in a document with
  an `<svg>`, the `href` of SVG's `<image>`, `<use>`, `<feImage>`; `srcset` in any case,
  `background`, `poster`; CSS `url(...)`, `@import "..."`, `image-set("..." 1x)`);
- `mailto`: a `mailto:` link, by the domain of its address;
- `attachment`: a MIME part that is not text (a PDF, an image, an `application/octet-stream`
  file whatever it holds), by its file name (RFC 2231 or 2047 decoded; its content type if it
  has none) and the first 16 hex digits of the SHA-256 of its decoded bytes (`attachment`):
  `offer.pdf@sha256:…`.
  Text parts, attached or not, are the text fingerprint's (content.py).

An `<iframe srcdoc>` holds a document of its own: its markup is read as the message's (three
documents deep).

Hosts, not paths: ESPs' click-tracking and unsubscribe links carry per-recipient tokens in
the path, and a set, not a count: personalised recommendations vary how many links there are.
A URL carried in a link's path or query (a redirect: `https://t.example/r?u=https%3A%2F%2F...`)
is one more target of the same kind: where the redirect sends the reader.
Hosts are lowercased and IDNA-encoded (punycode), so `Shop.Example`, `shop.example.` and a
Unicode host and its `xn--` form are one host. Relative URLs (no host) count for nothing,
unless the document has a `<base href>`: then each kind of them counts its host, as browsers
resolve them there. `cite` and `longdesc` do not count: no mail client shows or fetches them.

The stored form (`encode`) is the sorted pairs as `kind:host`, one space between; past
MAX_LISTED pairs, the first MAX_LISTED and `+N:<hash of all>`, so two sets compare equal iff
their stored forms do, and a reviewer can be told what changed (`describe_change`).
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from collections.abc import Iterable, Iterator
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
# then the value after them, double-, single- or unquoted. "src" finds `srcset` and `srcdoc`
# (an `<iframe>`'s document, whose markup is read as this one's) too, "action"
# `formaction` (of a `<button>` or `<input>`) and AMP's `action-xhr`. `<object data>` is
# looked for only where "object" is in the markup: "data" is in every `data-*` attribute.
_URL_ATTRIBUTES = ("href", "src", "background", "poster", "action", "ping")
_VALUE = re.compile(
    r"([sS][eE][tT]|[dD][oO][cC]|-[xX][hH][rR])?"
    r"[ \t\r\n]*=[ \t\r\n]*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+))"
)
# How deep `<iframe srcdoc>` documents inside one another are read (each level's markup is
# read once more: a bound on the work a crafted message makes).
_SRCDOC_DEPTH = 3
_TAG_NAME = re.compile(r"<[ \t\r\n]*([a-zA-Z][a-zA-Z0-9]*)")
_CSS_URL = re.compile(r"url\(\s*(?:\"([^\"]*)\"|'([^']*)'|([^)\s]*))", re.IGNORECASE)
# CSS that fetches a URL written as a bare string, not `url(...)`: `@import "..."` and the
# candidates of `image-set("a.png" 1x, "b.png" 2x)` (`-webkit-image-set` too; its `url(...)`
# candidates are `_CSS_URL`'s, a `type("image/avif")` is no candidate).
# (A comment between `@import` and its string is not read past: an unclosed one would be read to
# the end of the markup once for each `@import`. An `@import` stands in a `<style>` block, whose
# text is the text fingerprint's: another host there is changed text, or a bare URL's link.)
_CSS_IMPORT = re.compile(r"@import[ \t\r\n\f]*(?:\"([^\"]*)\"|'([^']*)')", re.IGNORECASE)
_IMAGE_SET = re.compile(r"image-set\(((?:[^()\"']|\"[^\"]*\"|'[^']*'|\([^()]*\))*)", re.I | re.A)
_SET_STRING = re.compile(r"(?:^|,)[ \t\r\n\f]*(?:\"([^\"]*)\"|'([^']*)')")
# (Names in ASCII case only, `re.A`: the long s, U+017F, is no `s` there.)
# A `<meta>` or `<base>` tag's attributes (up to its `>`, quoted values whole), and each
# attribute with its value, as an HTML parser reads them (`alt= href=x` is `alt`'s value).
_TAGS = {
    name: re.compile(rf"<{name}(?=[\s/>])((?:[^>\"']|\"[^\"]*\"|'[^']*')*)", re.I | re.A)
    for name in ("meta", "base")
}
_TAG_ATTRIBUTE = re.compile(
    r"([^\s\"'>/=]+)(?:[ \t\n\f\r]*=[ \t\n\f\r]*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+)))?"
)
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
# A bare URL in text, as content.py finds them, and a bare mailto: address.
_BARE = re.compile(r"https?://[^\s\"'<>)]+|mailto:[^\s\"'<>)]+", re.IGNORECASE)
# A URL's host in one match, as browsers read one (the WHATWG URL standard): `http`, `https`,
# `ftp`, `ws` and `wss` (any case) take any number of slashes or backslashes after the colon,
# none too (`https:///evil.example`, `https:\\evil.example` and `https:evil.example` all go
# to evil.example); another scheme has a host only with two of them (either way round); a
# scheme-relative URL has two or more of them (`//`, `\\`, `/\`, `///`: the document's URL
# is `http(s)` in a webmail, whose scheme takes any of them). Then the authority up to `/`,
# `?`, `#` or `\`, less any `user@` (up to its last `@`), is the host with its port. Anything
# else (`data:`, `cid:`, `tel:`, `javascript:`, a relative path) names no host and does not
# match. A `mailto:` (any case of ASCII letters, as a scheme) is told apart in the same match.
_HOST_OF = re.compile(
    r"(?:([mM][aA][iI][lL][tT][oO]:)"
    r"|(?:[hH][tT][tT][pP][sS]?|[fF][tT][pP]|[wW][sS][sS]?):[/\\]*"
    r"|[a-zA-Z][a-zA-Z0-9+.-]*:[/\\][/\\]|[/\\][/\\]+)"
    r"(?:[^/?#\\]*@)?([^/?#\\@]*)"
)
# What a browser strips from both ends of a URL (C0 controls and the space), and removes
# from anywhere in it (tab and line breaks: `ht&#9;tps://` is `https://`).
_BLANK = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = re.compile("[\t\n\r]")
_PORT = re.compile(r":[0-9]*$")
# A URL carried inside another's path or query (decoded), up to the next parameter.
_NESTED = re.compile(r"[hH][tT][tT][pP][sS]?:[/\\]*[^&\s\"'<>]+")
# Tags whose `href` (or `xlink:href`) loads something rather than being clicked: `<link>`, and
# in a document with an `<svg>`, SVG's `<image>`, `<use>`, `<feImage>` and `<script>` (outside
# one, an `<image>` is an `<img>`, whose `href` is nothing): by whether the markup has "link",
# "<svg".
_SVG_EMBEDDING = frozenset({"image", "use", "feimage", "script"})
_EMBEDDING_HREF = {
    (False, False): frozenset[str](),
    (True, False): frozenset({"link"}),
    (False, True): _SVG_EMBEDDING,
    (True, True): _SVG_EMBEDDING | {"link"},
}
# The kind of what each attribute names (`href` and `src`: see `_attribute`).
_KIND = {
    "src": "embed",
    "background": "embed",
    "poster": "embed",
    "action": "link",
    "data": "embed",
}


def targets_of_html(source: str) -> frozenset[Target]:
    """The link targets in the markup of an HTML part (decoded, markup and entities intact):
    URL attributes, CSS `url(...)`, `@import` and `image-set(...)`, a `<meta>` refresh, and
    relative URLs against a `<base href>`. Bare URLs in its text are `targets_of_text`'s."""
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


def _targets_of_html(source: str, depth: int = _SRCDOC_DEPTH) -> frozenset[Target]:
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
    # A relative URL goes to the host of the document's `<base href>`, if it has one: the kinds
    # of the relative URLs are collected, and only if there are any is a `<base>` looked for.
    relative: set[str] = set()
    # The tag name before each `href` is read only where one may embed: without "link" or
    # "<svg" in the markup no `href` is a `<link>`'s or an SVG image's (outside an `<svg>`, an
    # `<image>` is an `<img>`, whose `href` is nothing).
    tags = _EMBEDDING_HREF["link" in lowered, "<svg" in lowered]
    names = _URL_ATTRIBUTES if "object" not in lowered else (*_URL_ATTRIBUTES, "data")
    documents: list[str] = []  # `srcdoc` values
    for name in names if lowered else ():
        start = lowered.find(name)
        opened = [0, -1]  # `_tag`'s: how far the markup was searched for a `<`, the last found
        while start >= 0:
            _attribute(found, source, name, start, tags, relative, opened, documents)
            start = lowered.find(name, start + len(name))
    for document in documents if depth else ():  # its entities decoded: its markup
        found |= _targets_of_html(html.unescape(document), depth - 1)
    if "refresh" in lowered:
        _refresh(found, source, relative)
    _css(found, source, lowered or source.lower(), relative)
    if relative and "<base" in lowered:
        _resolve(found, source, relative)
    return frozenset(found)


def _css(found: set[Target], source: str, css: str, relative: set[str]) -> None:
    """Add the targets of CSS in `source` (`css`: it lowercased): `url(...)`, `@import "..."`
    and `image-set("..." 1x)`. CSS names are in any case (`uRl(`); in a style attribute an
    editor writes the quotes of `url("...")` as `&quot;`, which are the value's quotes once
    decoded."""
    if "url(" in css:
        for match in _CSS_URL.finditer(source):
            value = match.group(1) or match.group(2) or match.group(3) or ""
            if value.startswith("&"):
                value = html.unescape(value).strip(_BLANK + "\"'")
            _add(found, "embed", value, 2, relative)
    if "@" in css and "@import" in css:  # "@" alone is a `memchr`: most markup has none
        for match in _CSS_IMPORT.finditer(source):
            _add(found, "embed", match.group(1) or match.group(2) or "", 2, relative)
    if "image-set(" in css:
        # Entities decoded first, in all the markup: a style attribute's `&quot;` quotes are the
        # strings' once decoded, and the `(` or `)` in such a string is no bracket of the CSS.
        text = html.unescape(source) if "&" in source else source
        for match in _IMAGE_SET.finditer(text):
            for string in _SET_STRING.finditer(match.group(1)):
                _add(found, "embed", string.group(1) or string.group(2) or "", 2, relative)


def _attribute(
    found: set[Target],
    source: str,
    name: str,
    start: int,
    tags: frozenset[str],
    relative: set[str],
    opened: list[int],
    documents: list[str],
) -> None:
    """Add the target of the attribute `name` at `start` in `source`, if it is one: a name
    of its own (not `data-src`) with a value. `tags`: the tags whose `href` embeds (see
    `_EMBEDDING_HREF`); `relative`: where to collect the kinds of relative URLs; `opened`:
    `_tag`'s memo; `documents`: where to put an `<iframe srcdoc>`'s value."""
    # (`formaction`, a button's or an input's action, is found by its "action")
    inside = start > 0 and (source[start - 1].isalnum() or source[start - 1] in "-_")
    if inside and (name != "action" or not _is_formaction(source, start)):
        return
    value = _VALUE.match(source, start + len(name))
    if value is None:
        return
    suffix, double, single, bare = value.groups()
    url = double or single or bare or ""
    if suffix is not None:
        if name == "src" and suffix[0] in "dD":  # srcdoc: read as a document of its own
            documents.append(url)
        elif name == "src" and suffix[0] != "-":  # srcset: candidates "url 1x, url 2x"
            for candidate in url.split(","):
                _add(found, "embed", candidate.strip().partition(" ")[0], 2, relative)
        elif name == "action" and suffix[0] == "-" and not inside:  # AMP's action-xhr
            _add(found, "link", url, 2, relative)
    elif name == "href":
        # Not asked whether the name stands inside a tag: a `>` in an earlier attribute's value
        # (`title="a>b"`) would hide the link, and `href=` in the text with a URL after it has
        # a bare URL, a link anyway. The last `<` before it names the tag (for `<link href>`).
        _add(
            found,
            "embed" if tags and _tag(source, start, opened) in tags else "link",
            url,
            2,
            relative,
        )
    elif name == "ping":  # `<a ping>`: the URLs (one or more) told of a click
        for each in url.split():
            _add(found, "link", each, 2, relative)
    elif name != "data" or _tag(source, start, opened) == "object":  # `data`: an `<object>`'s only
        _add(found, _KIND[name], url, 2, relative)


def _tag(source: str, start: int, opened: list[int]) -> str:
    """The name of the tag (lowercased) the attribute at `start` is in: the last `<`'s.
    `opened`: how far `source` was searched for a `<` and the last one found, for the last
    `start` (each smaller than this one): only the markup after it is searched, so a message
    with many attributes and few `<` is read once, not once for each of them."""
    last = source.rfind("<", opened[0], start)
    if last < 0:
        last = opened[1]
    opened[0], opened[1] = start, last
    tag = _TAG_NAME.match(source, last) if last >= 0 else None
    return "" if tag is None else tag.group(1).lower()


def _is_formaction(source: str, start: int) -> bool:
    """Whether the "action" at `start` ends a `formaction` attribute's name."""
    begin = start - 4
    return (
        begin >= 0
        and source[begin:start].lower() == "form"
        and (begin == 0 or not (source[begin - 1].isalnum() or source[begin - 1] in "-_"))
    )


def _refresh(found: set[Target], source: str, relative: set[str]) -> None:
    """Add the target of a `<meta http-equiv="refresh" content="5; url=...">`: where the
    client sends the reader after the delay (a link)."""
    for attributes in _tags(source, "meta"):
        equiv = attributes.get("http-equiv", "")
        content = attributes.get("content")
        if content is None or html.unescape(equiv).strip(" \t\n\f\r").lower() != "refresh":
            continue
        url = _refresh_url(html.unescape(content))
        if url is not None:
            _add(found, "link", url, 2, relative)


_WHITESPACE = " \t\n\f\r"


def _refresh_url(content: str) -> str | None:
    """The URL of a refresh's `content` (`5; url='https://...'`), read as the HTML standard's
    "shared declarative refresh steps" do; None without one."""
    content = content.lstrip(_WHITESPACE)
    time = content.lstrip("0123456789")
    if time == content and not time.startswith("."):
        return None
    rest = time.lstrip("0123456789.")
    if not rest:
        return None
    if rest[0] not in ";," + _WHITESPACE:
        return None
    rest = rest.lstrip(_WHITESPACE)
    if rest[:1] in (";", ","):
        rest = rest[1:].lstrip(_WHITESPACE)
    if rest[:3].lower() == "url":
        after = rest[3:].lstrip(_WHITESPACE)
        if after.startswith("="):
            rest = after[1:].lstrip(_WHITESPACE)
    if rest[:1] in ("'", '"'):
        rest = rest[1:].partition(rest[0])[0]
    return rest or None


def _tags(source: str, name: str) -> Iterator[dict[str, str]]:
    """The attributes of each `<name>` tag (`meta` or `base`) in `source`, by their lowercased
    names (the first of a name counts, as browsers take it), values as written."""
    for tag in _TAGS[name].finditer(source):
        attributes: dict[str, str] = {}
        for attribute in _TAG_ATTRIBUTE.finditer(tag.group(1)):
            value = attribute.group(2) or attribute.group(3) or attribute.group(4) or ""
            attributes.setdefault(attribute.group(1).lower(), value)
        yield attributes


def _resolve(found: set[Target], source: str, relative: set[str]) -> None:
    """Add the host of the document's base URL (its first `<base href>`) for each kind of
    relative URL found: `<base href="https://evil.example/">` sends `<a href="/p">` there,
    and loads `<img src="a.png">` from there. (The `<base href>` is a link of its own too.)"""
    href = next((tag["href"] for tag in _tags(source, "base") if "href" in tag), None)
    if href is None:
        return
    url = _cleaned(html.unescape(href))
    match = _HOST_OF.match(url)
    if match is None or match.group(1) is not None:
        return
    host = _host(match.group(2))
    if host:
        found.update((kind, host) for kind in relative)


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


def _add(
    found: set[Target], kind: str, url: str, nested: int = 2, relative: set[str] | None = None
) -> None:
    """Add the target of `url` (an attribute's value: entities not yet decoded), if it has
    a host, and those of the URLs it carries in its path or query (`_add_nested`), up to
    `nested` levels deep. A relative URL's kind is added to `relative`, if given."""
    url = _cleaned(url)
    match = _HOST_OF.match(url)
    # Entities are decoded first, unless the first `&` comes after the character that ends the
    # host: the text before an `&` is the same decoded, and the match reads no further than
    # that character. A click-tracking link's `&amp;` in its query costs nothing then.
    if "&" in url and (match is None or match.group(1) is not None or url.find("&") < match.end()):
        url = _cleaned(html.unescape(url))
        match = _HOST_OF.match(url)
    if match is None:  # relative, or `data:`, `cid:`, `tel:`, `javascript:`...: no host
        if relative is not None and _SCHEME.match(url) is None:
            relative.add(kind)  # the base URL's host, if the document has a `<base href>`
        return
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
