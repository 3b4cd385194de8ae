"""A fingerprint of what a message says, blind to what changes per recipient or per send.

Two sends of the same offer hash alike even when the tool personalised the greeting, added
tracking parameters to the links or reflowed the text. The repetition policy counts by it.

It is also blind to how the text was encoded: a subject as RFC 2047 encoded words or as raw
UTF-8, a body as quoted-printable, base64 or 8bit, in any charset, HTML entities (`&eacute;`,
`&#233;`) or the characters themselves, composed or decomposed accents (Unicode NFC).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import html
import re
import unicodedata
from email.message import Message

from sendguard.headers import Headers, split_message

MAX_TEXT = 256 * 1024  # fingerprint the first 256 KiB of text: enough to tell offers apart

_URL = re.compile(r"https?://[^\s\"'<>)]+", re.IGNORECASE)
_TRACKING = re.compile(
    r"^(utm_[a-z]+|fbclid|gclid|dclid|msclkid|mc_[a-z]+|_hs[a-z]+|mkt_tok|trk|ref|"
    r"vero_[a-z]+|oly_[a-z_]+|s_cid|cid|sid|uid|token|email|e|subscriber(_id)?)$",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(hi|hello|hey|dear|good (morning|afternoon|evening)|hallo|liebe[rs]?|bonjour|hola)\b"
    r"[^\n]{0,60}$",
    re.IGNORECASE | re.MULTILINE,
)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _strip_tracking(match: re.Match[str]) -> str:
    url = match.group(0)
    base, _, query = url.partition("?")
    if not query:
        return url
    kept = [p for p in query.split("&") if not _TRACKING.match(p.partition("=")[0])]
    return base + ("?" + "&".join(sorted(kept)) if kept else "")


def normalise(subject: str, text: str) -> str:
    """The text as compared: no greeting line, no tracking parameters, no markup, one spacing."""
    body = _GREETING.sub("", text)
    body = _URL.sub(_strip_tracking, body)
    body = _TAGS.sub(" ", body)
    text = unicodedata.normalize("NFC", f"{subject}\n{body}")
    return _SPACE.sub(" ", text).strip().lower()


def text_of(message: Message) -> str:
    """Every text part of a parsed message, decoded (transfer encoding, charset, and in HTML
    the markup and its entities), up to MAX_TEXT characters."""
    parts: list[str] = []
    size = 0
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        decoded = part_text(
            payload, part.get_content_charset() or "utf-8", part.get_content_subtype()
        )
        parts.append(decoded)
        size += len(decoded)
        if size >= MAX_TEXT:
            break
    return "\n".join(parts)[:MAX_TEXT]


def part_text(payload: bytes, charset: str, subtype: str) -> str:
    """The text of one decoded text part (`payload` without its transfer encoding)."""
    try:
        decoded = payload.decode(charset, errors="replace")
    except LookupError:
        decoded = payload.decode("utf-8", errors="replace")
    if subtype == "html":
        # Entities stand for characters in HTML only (in plain text `&eacute;` is just that).
        decoded = html.unescape(_TAGS.sub(" ", decoded))
    return decoded


def content_hash(raw: bytes) -> str:
    """The fingerprint of a raw message (subject and text parts)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    # Read as every other header is (RFC 2047 words decoded, raw UTF-8 read as UTF-8).
    subject = Headers.parse(split_message(raw)[0]).get("Subject") or ""
    return text_hash(subject, text_of(parsed))


def text_hash(subject: str, text: str) -> str:
    """The fingerprint of a message whose subject and text (as `text_of` reads it) are known:
    `content_hash` without parsing the message again."""
    return hashlib.sha256(normalise(subject, text).encode()).hexdigest()[:32]
