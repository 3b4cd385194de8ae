"""Retransmissions: an SMTP client's second copy of a message it already handed over.

An SMTP client that never heard the `250` after DATA (the connection reset, its own timeout
after sendguard committed) sends the message again, as RFC 5321 clients do. Without a check the
recipient gets it twice (a transactional mail at once, a marketing one a day later when the
frequency cap opens). HTTP clients say what a retry is with Idempotency-Key; an SMTP client says
nothing, so a retransmission is recognised by what it carries: the same client-written
Message-ID, the same envelope sender and the same content: the body byte for byte (a client
sends its queued copy again) and both fingerprints, text and links (the subject). A different
message that reuses a Message-ID, as badly written tools do, is never taken for a copy: not even
one whose only change is what the fingerprints are blind to (a sign-in link's token, a code's
letter case). A copy is looked up per recipient, inside the recipient's lock, among the deliveries
accepted within `smtp.resend_window` (`Engine.decide`, a core check like the kill switch).

A message without a Message-ID of its own (sendguard stamps one) is never a copy, and neither is
a retry whose client wrote a new Message-ID: it cannot be told from a new message.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from datetime import datetime
from typing import NamedTuple

from sendguard.address import recipient_key
from sendguard.phrasing import human_time
from sendguard.verdict import Decision, PolicyOutcome, Verdict

RESEND = "resend"
"""The name under which the resend check appears among a delivery's policy outcomes."""

_SHOWN = 200
"""At most this much of a Message-ID is quoted in a reason (it is the client's text)."""


class CopyQuery(NamedTuple):
    """What to look for among a recipient's deliveries: those with `key` accepted since `since`."""

    key: int
    since: datetime


class Copy(NamedTuple):
    """A delivery to the recipient of an earlier copy of the message being decided."""

    message_id: str
    delivery_id: str
    accepted_at: datetime


def client_message_id(message_id: str | None) -> str | None:
    """The Message-ID header's value as the client wrote it, blanks around it removed; None
    when it wrote none (or an empty one)."""
    if message_id is None:
        return None
    value = " ".join(message_id.split())
    return value or None


_BOUNDARY = re.compile(r'(?i)\bboundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))')
"""A Content-Type's boundary parameter, quoted or not (RFC 2045 5.1)."""

_NESTED = (b"boundary=", b"Boundary=", b"BOUNDARY=")
"""How a nested multipart's boundary parameter is found in a body (by `bytes.find`, which is
fast over a large body where a case-blind expression is not; another spelling of the
parameter's name leaves that part's boundary counted, as before)."""


def boundaries(content_type: str | None, body: bytes) -> list[bytes]:
    """The MIME boundaries of a multipart message whose Content-Type is `content_type`: its
    own and those of the multiparts nested in `body`, longest first; none for a message that
    is not multipart."""
    if content_type is None or not content_type.lstrip().lower().startswith("multipart/"):
        return []
    found: set[bytes] = set()
    match = _BOUNDARY.search(content_type)
    if match is not None:
        found.add((match.group(1) or match.group(2)).encode("utf-8", "surrogateescape"))
    for name in _NESTED:
        at = body.find(name)
        while at >= 0:
            line_end = body.find(b"\n", at)
            line = body[at : line_end if line_end >= 0 else len(body)].decode("latin-1")
            nested = _BOUNDARY.search(line)
            if nested is not None:
                found.add((nested.group(1) or nested.group(2)).encode("latin-1"))
            at = body.find(name, at + len(name))
    return sorted(found, key=len, reverse=True)


def body_digest(body: bytes, bounds: list[bytes]) -> tuple[int, int]:
    """The length and CRC-32 of `body` without the MIME boundaries `bounds`: a client that
    builds a message again for its retry (nodemailer does, for an app's second sendMail with
    the same `messageId`) writes new random boundaries around the same parts."""
    if not bounds:
        return len(body), zlib.crc32(body)
    spans: list[tuple[int, int]] = []
    for bound in bounds:
        at = body.find(bound)
        while at >= 0:
            spans.append((at, at + len(bound)))
            at = body.find(bound, at + len(bound))
    view = memoryview(body)
    crc, length, pos = 0, 0, 0
    for start, end in sorted(spans):
        if start < pos:  # within a longer boundary already left out
            continue
        crc = zlib.crc32(view[pos:start], crc)
        length += start - pos
        pos = end
    return length + len(body) - pos, zlib.crc32(view[pos:], crc)


def resend_key(
    message_id: str,
    mail_from: str,
    content_hash: str | None,
    links: str | None,
    body: bytes | memoryview = b"",
    content_type: str | None = None,
) -> int:
    """The key under which a message's deliveries are kept for the resend check: a 64-bit digest
    of its client-written Message-ID, its envelope sender (compared as a recipient key: the
    client may change a letter's case between tries, never the address), its two content
    fingerprints and its body (the bytes after the header block: the fingerprints are blind to
    a URL's path and query and to letter case, which tell a new sign-in link or code from the
    last). Each part is length-prefixed, so no two different tuples share an input. The body
    counts by its length and CRC-32: what tells a resent body from a changed one among
    messages alike in all else, at a seventh of the instructions of hashing it with SHA-256
    (some 7,000 for the bench's 2 KB newsletter, against 48,000). A multipart body (its
    `content_type` says) counts without its MIME boundaries, which a client that builds the
    message again for its retry writes anew."""
    digest = hashlib.sha256()
    for part in (message_id, recipient_key(mail_from), content_hash or "", links or ""):
        data = part.encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    if content_type is not None and content_type.lstrip()[:10].lower() == "multipart/":
        whole = bytes(body)  # a multipart's parts are found by their boundaries
        length, crc = body_digest(whole, boundaries(content_type, whole))
    else:
        length, crc = len(body), zlib.crc32(body)
    digest.update(length.to_bytes(8, "big"))
    digest.update(crc.to_bytes(4, "big"))
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def resend_outcome(copy: Copy, message_id: str) -> PolicyOutcome:
    """The drop of a retransmission, with a reason a marketer reads in the timeline."""
    shown = message_id if len(message_id) <= _SHOWN else message_id[:_SHOWN] + "..."
    reason = (
        f"a copy of message {copy.message_id} (Message-ID {shown}) accepted at"
        f" {human_time(copy.accepted_at)}: the client sent it again; not sent twice"
    )
    return PolicyOutcome(RESEND, Verdict.drop(reason))


def is_resend(decision: Decision) -> bool:
    """Whether `decision` dropped a retransmission (the SMTP client still hears `250`: its
    first copy was accepted)."""
    return any(o.policy == RESEND for o in decision.outcomes)
