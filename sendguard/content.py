"""A fingerprint of what a message says, blind to what changes per recipient or per send.

Two sends of the same offer hash alike even when the tool personalised the greeting, added
tracking parameters to the links or reflowed the text. The repetition policy counts by it.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from email.message import Message

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
    return _SPACE.sub(" ", f"{subject}\n{body}").strip().lower()


def text_of(message: Message) -> str:
    """Every text part of a parsed message, decoded, up to MAX_TEXT characters."""
    parts: list[str] = []
    size = 0
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            decoded = payload.decode(charset, errors="replace")
        except LookupError:
            decoded = payload.decode("utf-8", errors="replace")
        parts.append(decoded)
        size += len(decoded)
        if size >= MAX_TEXT:
            break
    return "\n".join(parts)[:MAX_TEXT]


def content_hash(raw: bytes) -> str:
    """The fingerprint of a raw message (subject and text parts)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = str(parsed.get("Subject", ""))
    return hashlib.sha256(normalise(subject, text_of(parsed)).encode()).hexdigest()[:32]
