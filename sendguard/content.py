"""A fingerprint of what a message says, blind to what changes per recipient or per send.

Two sends of the same offer hash alike even when the tool personalised the greeting, added
tracking parameters to the links or reflowed the text. The repetition policy counts by it.

It is also blind to how the text was encoded: a subject as RFC 2047 encoded words or as raw
UTF-8, a body as quoted-printable, base64 or 8bit, in any charset, HTML entities (`&eacute;`,
`&#233;`) or the characters themselves, composed or decomposed accents (Unicode NFC).
"""

from __future__ import annotations

import contextlib
import email
import email.errors
import email.header
import email.policy
import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable
from email.message import Message
from typing import NamedTuple

from sendguard.headers import Headers, header_end
from sendguard.links import Target, attachment, targets_of_html, targets_of_text
from sendguard.links import encode as encode_targets

MAX_TEXT = 256 * 1024  # fingerprint the first 256 KiB of text: enough to tell offers apart

# A bare URL in text, as links.py finds them (`http(s)://`, `mailto:`). The text fingerprint
# reads each as LINK: where it goes is the links fingerprint's (its host or the address's
# domain, and the hosts it carries), and the rest of it is not the campaign's copy:
# click-tracking and unsubscribe URLs carry a token per recipient in the path or query
# (`/ls/click?upn=...`, `/subscription/0b6f/...`), a reply address one in its local part.
# HTML links were never in the text (their markup is stripped).
_URL = re.compile(r"https?://[^\s\"'<>)]+", re.IGNORECASE)
_MAILTO = re.compile(r"mailto:[^\s\"'<>)]+", re.IGNORECASE)
LINK = "[link]"
# A greeting at the start of a line: the word, a name, and the comma, colon or exclamation
# mark that ends it (`Hi Ann,`), or the line's end. What follows on the line is the message
# ("Hi Ann, your table is booked for 8pm." keeps "your table is booked for 8pm.").
_GREETING_WORDS = (
    r"(hi|hello|hey|dear|good (morning|afternoon|evening)|hallo|liebe[rs]?|bonjour|hola)\b"
)
_GREETING = re.compile(
    r"^\s*" + _GREETING_WORDS + r"[^\n,:;!]{0,60}(?:[,:;!]|$)",
    re.IGNORECASE | re.MULTILINE,
)
# The same greeting after the line break that starts its line (`_drop_greetings`). A pattern
# that starts with `^` is tried at every position of the text; one that starts with a literal
# is tried only where the literal is (the regex engine looks for it first): 3x cheaper on a
# 2 KB text.
# The lookahead says at once that a line starts with none of the words' first letters (under
# IGNORECASE the class matches what those letters match); without it each line's start tried
# the ten words one by one: 588 → 130 µs on make bench's 100 KB newsletter (1,400 lines).
_BROKEN_GREETING = re.compile(
    "\n" + r"\s*(?=[hdglb])" + _GREETING.pattern[len(r"^\s*") :], _GREETING.flags
)
_TAGS = re.compile(r"<[^>]+>")
# Tags that end a line where HTML is rendered (email builders write paragraphs with no line
# break between them): a line break, so a greeting paragraph is a line of its own.
_BREAKS = re.compile(
    r"<\s*(?:br|/?(?:p|div|tr|td|th|li|h[1-6]|table|ul|ol|blockquote))\b[^>]*>", re.IGNORECASE
)


def normalise(subject: str, text: str) -> str:
    """The text as compared: no greeting (line, or in the subject `subject_of`), every URL as
    `LINK`, no markup, one spacing."""
    # Composed first: in decomposed text a greeting word ends before an accent of its own
    # last letter ("HI" + U+0300 reads as "Hi"), which the composed form has not.
    body = _drop_greetings(unicodedata.normalize("NFC", text))
    # Every URL has one of these; a substitution costs as much as several searches. Two
    # patterns, not one alternation: the regex engine looks for a pattern's literal start,
    # but tries an alternation at every position (1.8x the instructions on a 2 KB text with
    # 7 URLs). `MAILTO:` in capitals, rare, is compared as text: one search less per text.
    if "://" in body:
        body = _URL.sub(LINK, body)
    if "ailto:" in body:
        body = _MAILTO.sub(LINK, body)
    if "<" in body:
        body = _TAGS.sub(" ", body)
    text = unicodedata.normalize("NFC", f"{subject_of(subject)}\n{body}")
    return _one_spacing(text).lower()


# A greeting opening the subject: the greeting word, at most three words more (a name), and
# the comma, colon, semicolon or exclamation mark that ends it (`Hi Ann, your picks`). Unlike
# a body line's greeting it needs the mark: a subject without one ("Hello summer sale") is
# compared whole, not dropped up to its end. (Words apart by blanks: a word the pattern
# could split among its repetitions would cost polynomial backtracking on a long subject.)
_SUBJECT_GREETING = re.compile(
    r"\s*" + _GREETING_WORDS + r"(?:[ \t]+[^\s,:;!]+){0,3}[ \t]*[,:;!]\s*", re.IGNORECASE
)
# A name opening the subject with a comma after it (`Ann, your spring picks`), or closing it
# after one (`Thanks for your time, Paula!`): one word, checked by `_is_name`.
_NAME_FIRST = re.compile(r"\s*([^\W\d_][\w'\u2019-]{1,39}),\s+(?=\S)")
_NAME_LAST = re.compile(r",\s*([^\W\d_][\w'\u2019-]{1,39})\s*[!.]?\s*$")


def _is_name(word: str) -> bool:
    """A word written as a name: a capital, then some lower case letters (`Ann`, `Zoë`,
    `O'Neil`, `Anne-Marie`), no digit or underscore. Not `SALE`, `50%`, `spring`."""
    rest = word[1:]
    return (
        word[0].isupper()
        and any(c.islower() for c in rest)
        and not any(c.isdigit() or c == "_" for c in rest)
    )


def subject_of(subject: str) -> str:
    """The subject as compared: without a leading greeting (`Hi Ann,`), a leading name and
    its comma (`Ann, your spring picks`) or a closing comma and name (`..., Paula!`): what a
    sending tool puts a recipient's name in. What the rest says is compared as written, so
    `Ann, 50% off` and `Ann, 70% off` differ. The name is told by how it is written only (a
    capitalised word): `Berlin, spring picks` and `Munich, spring picks` compare alike too."""
    if "," not in subject and ":" not in subject and ";" not in subject and "!" not in subject:
        return subject  # every rule ends at one of them: the common subject costs this
    if not subject.isascii():
        subject = unicodedata.normalize("NFC", subject)  # `_is_name` reads composed letters
    last = _NAME_LAST.search(subject)
    if last is not None and _is_name(last.group(1)):
        subject = subject[: last.start()]
    greeting = _SUBJECT_GREETING.match(subject)
    if greeting is not None:
        return subject[greeting.end() :]
    first = _NAME_FIRST.match(subject)
    if first is not None and _is_name(first.group(1)):
        return subject[first.end() :]
    return subject


def _drop_greetings(text: str) -> str:
    """`_GREETING.sub("", text)`: `^` in multi-line mode matches at the start and after each
    line break, so the same matches are those of `_BROKEN_GREETING` after a line break put in
    front, each replaced by its line break. A match never takes the line break before the next
    one (it ends at a punctuation mark or before a line break), so none is lost between two."""
    return _BROKEN_GREETING.sub("\n", "\n" + text)[1:]


# What str.split() and `\s` take for whitespace among the ASCII characters, but the space.
_ASCII_BLANKS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"


def _one_spacing(text: str) -> str:
    """Runs of whitespace as one space, none at the ends: `" ".join(text.split())`.

    str.split() and the regular expressions' whitespace class know the same whitespace, and
    splitting is many times cheaper than substituting every single space. ASCII text (the
    common message) is cheaper still by replacing: each kind of blank that occurs becomes a
    space, then double spaces become one until none is left (each pass halves every run),
    without a string per word."""
    if not text.isascii():
        return " ".join(text.split())
    # A message's text has CRLF line ends: each pair read as one space at once, not as two
    # that the halving below joins again (a search for two characters is what costs here:
    # 1.78 M instead of 2.77 M instructions for the 100 KB newsletter of `make bench`).
    if "\r\n" in text:
        text = text.replace("\r\n", " ")
    for blank in _ASCII_BLANKS:
        if blank in text:
            text = text.replace(blank, " ")
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip(" ")


def text_of(message: Message) -> str:
    """Every text part of a parsed message, decoded (transfer encoding, charset, and in HTML
    the markup and its entities), up to MAX_TEXT characters."""
    return _parts_of(message)[0]


def _parts_of(
    message: Message, attachments: set[Target] | None = None
) -> tuple[str, list[str], list[str]]:
    """`text_of`'s text, and for the link targets every text part's text and the markup of
    every HTML part, past MAX_TEXT too (a link after a long text is still a link). Each part
    that is not text (`attachment_target`) is added to `attachments` when it is given."""
    texts: list[str] = []
    sources: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            if attachments is not None and not part.is_multipart():
                attachments.add(attachment_target(part))
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        subtype = part.get_content_subtype()
        decoded = decode_part(payload, part.get_content_charset() or "utf-8")
        if subtype in _HTML_SUBTYPES:
            sources.append(decoded)
        texts.append(readable(decoded, subtype))
    text = ""
    size = 0
    for i, part_text_ in enumerate(texts):
        size += len(part_text_)
        if size >= MAX_TEXT:  # text_of read no part past the one that reached MAX_TEXT
            text = "\n".join(texts[: i + 1])[:MAX_TEXT]
            break
    else:
        text = "\n".join(texts)[:MAX_TEXT]
    return text, texts, sources


def part_text(payload: bytes, charset: str, subtype: str) -> str:
    """The text of one decoded text part (`payload` without its transfer encoding)."""
    return readable(decode_part(payload, charset), subtype)


def decode_part(payload: bytes, charset: str) -> str:
    """A text part's payload (without its transfer encoding) in its charset."""
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def readable(decoded: str, subtype: str) -> str:
    """A decoded text part as a reader sees it: HTML without markup and entities."""
    if subtype == "html":
        # Entities stand for characters in HTML only (in plain text `&eacute;` is just that).
        return html.unescape(_TAGS.sub(" ", _BREAKS.sub("\n", decoded)))
    return decoded


# The parts whose markup is read for links: HTML, and AMP for Email (`text/x-amp-html`, shown
# in place of the HTML by Gmail and others), whose links a bare-URL search of its text would
# miss when written with entities (`&#104;ttps://`). Its text is read as before.
_HTML_SUBTYPES = frozenset({"html", "x-amp-html"})


class Fingerprint(NamedTuple):
    """A message's two fingerprints: what it says and where it points (a tuple: made for
    every message, and a frozen dataclass costs more to make)."""

    text: str
    """`content_hash`: the subject and text, blind to greetings, names in the subject and what
    URLs in the text say (`links` has their hosts)."""
    links: str
    """The link targets (links.py) in their stored form: hosts of links and embeds, and
    attachments (name and digest of each part that is not text)."""


def attachment_target(part: Message) -> Target:
    """The `attachment` target (links.py) of a MIME leaf part that is not text: its file name
    and the SHA-256 of its decoded bytes (base64 or quoted-printable undone, so re-encoding the
    same file is no change)."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    name = part.get_filename() or part.get_content_type()
    if "=?" in name:  # RFC 2047 words, as some clients write a file name (RFC 2231 is decoded)
        # Undecodable: kept as written (the same words name the same file).
        with contextlib.suppress(UnicodeError, LookupError, email.errors.HeaderParseError):
            name = str(email.header.make_header(email.header.decode_header(name)))
    return attachment(name, data)


def link_targets(
    texts: Iterable[str], html_sources: Iterable[str], others: Iterable[Target] = ()
) -> str:
    """The stored link targets of a message whose text parts (as a reader sees each) and
    HTML parts (markup intact) are known, with `others` (its attachments) among them."""
    found: set[Target] = set(others)
    for text in texts:
        found |= targets_of_text(text)
    for source in html_sources:
        found |= targets_of_html(source)
    return encode_targets(found) if found else ""


def content_hash(raw: bytes, headers: Headers | None = None) -> str:
    """The fingerprint of a raw message (subject and text parts).

    `headers`: the message's headers when the caller has read them already (the Subject is
    all that is used; it is read from `raw` otherwise).
    """
    return fingerprints(raw, headers).text


def fingerprints(raw: bytes, headers: Headers | None = None) -> Fingerprint:
    """Both fingerprints of a raw message, from one reading of it (`content_hash`'s)."""
    end = header_end(raw)
    if headers is None:
        headers = Headers.parse(raw[:end])
    # Read as every other header is (RFC 2047 words decoded, raw UTF-8 read as UTF-8).
    subject = headers.get("Subject") or ""
    single = _single_part(raw, end)
    attachments: set[Target] = set()
    if single is not None:
        decoded, subtype = single
        text = readable(decoded, subtype)[:MAX_TEXT]
        texts = [text]
        sources = [decoded] if subtype == "html" else []
    else:
        text, texts, sources = _parts_of(
            email.message_from_bytes(raw, policy=email.policy.compat32), attachments
        )
    return Fingerprint(text_hash(subject, text), link_targets(texts, sources, attachments))


def text_hash(subject: str, text: str) -> str:
    """The fingerprint of a message whose subject and text (as `text_of` reads it) are known:
    `content_hash` without parsing the message again."""
    if len(text) > _RECENT_TEXT:
        return _text_hash(subject, text)
    key = (subject, text)
    found = _recent.get(key)
    if found is None:
        found = _recent[key] = _text_hash(subject, text)
        if len(_recent) > _RECENT:
            _recent.pop(next(iter(_recent), key), None)  # the oldest (another thread may pop too)
    return found


def _text_hash(subject: str, text: str) -> str:
    return hashlib.sha256(normalise(subject, text).encode()).hexdigest()[:32]


# The fingerprints of the last texts seen, by (subject, text): a blast sends the same text to
# every recipient in messages of their own (a tool that sends one copy per recipient, as
# smtp-source does in `make bench`), and normalising and hashing it again costs some 270,000
# instructions for a 2 KB newsletter, a look-up here about 2,000 (the text's hash and, when
# found, a comparison). Texts that differ (a personalised greeting) are all misses: a look-up
# more each. Bounded: at most _RECENT texts of at most _RECENT_TEXT characters are kept.
_RECENT = 32
_RECENT_TEXT = 64 * 1024
_recent: dict[tuple[str, str], str] = {}


# A header line as the `email` parser (compat32, as `content_hash` uses it) reads one: a name
# of printable ASCII but the colon, then the colon. A line starting with a blank continues one.
_HEADER_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_SIMPLE_TYPE = re.compile(
    r"[ \t]*text/(plain|html)[ \t]*(?:;[ \t]*charset=(\"?)([A-Za-z0-9_.:+-]+)\2[ \t]*)?",
    re.IGNORECASE,
)
_NOT_ENCODED = frozenset({b"7bit", b"8bit", b"binary"})
_PART_HEADERS = frozenset({b"content-type", b"content-transfer-encoding"})


def _single_part_text(raw: bytes, end: int) -> str | None:
    """What `text_of` reads from `raw` (whose header block ends at `end`), without the `email`
    parser, for the common message (`_single_part`); None for any other message."""
    single = _single_part(raw, end)
    if single is None:
        return None
    return readable(*single)[:MAX_TEXT]


def _single_part(raw: bytes, end: int) -> tuple[str, str] | None:
    """The body of `raw` decoded with its charset, and its subtype, without the `email`
    parser, for the common message: one text/plain or text/html part without a transfer
    encoding, at most a `charset` parameter, a header block of well-formed lines. None for
    any other message, which the parser reads.

    With nothing to decode, the parser hands on the body's bytes as they came, so the text is
    the body decoded with the charset, as `text_of` decodes it. tests/unit/test_content.py
    compares both readings over generated messages.
    """
    block = raw[:end]
    if not block or end >= len(raw) or b"\r" in block.replace(b"\r\n", b""):
        return None  # no body, or a bare CR, which the parser takes for a line break
    found: dict[bytes, bytes] = {}
    name = b""
    for line in block.splitlines():
        if line[:1] in (b" ", b"\t"):
            if not name or name in _PART_HEADERS:
                return None  # a first line that continues nothing, or a folded part header
            continue
        if _HEADER_NAME.match(line) is None:
            return None  # the parser would take the body to start here
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in _PART_HEADERS:
            if name in found:
                return None  # repeated: the parser reads the first one
            found[name] = value.lstrip(b" \t")
    charset, subtype = "utf-8", "plain"
    if b"content-type" in found:
        simple = _SIMPLE_TYPE.fullmatch(found[b"content-type"].decode("latin-1"))
        if simple is None:
            return None
        subtype = simple.group(1).lower()
        charset = (simple.group(3) or charset).lower()
    if found.get(b"content-transfer-encoding", b"7bit").lower() not in _NOT_ENCODED:
        return None
    body = raw[end + (2 if raw[end : end + 2] == b"\r\n" else 1) :]
    return decode_part(body, charset), subtype
