"""Sending and looking up: `POST /v1/messages`, messages, deliveries and timelines."""

from __future__ import annotations

import asyncio
import email.charset
import email.header
import email.policy
import email.utils
import functools
import hashlib
import json
import quopri
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from sendguard.clock import monotonic
from sendguard.content import MAX_TEXT, Fingerprint, link_targets, part_text, text_hash
from sendguard.deliveries import DeliveryQuery
from sendguard.errors import Conflict, IdempotencyKeyReused, InvalidMessage
from sendguard.fields import FieldOverrides, parse_time
from sendguard.headers import Headers, Trace, format_date, header_end
from sendguard.ingress.http_context import api, identity
from sendguard.ingress.mailboxes import NULL_SENDER, mailbox_address, sender_domain
from sendguard.ingress.payloads import BadRequest, address_in, overrides_of, parse_json
from sendguard.ingress.queries import MAX_DELIVERIES
from sendguard.ingress.send_payload import SendContent, read_send
from sendguard.ingress.views import (
    decision_reasons,
    delivery_view,
    event_view,
    message_view,
    when,
)
from sendguard.intake import Accepted, Idempotency, idempotency_scope
from sendguard.message import Delivery, DeliveryState
from sendguard.offload import LARGE, in_process

MAX_KEY = 200


def accepted_body(accepted: Accepted) -> bytes:
    """The 202 answer to a send (also what an Idempotency-Key replays); orjson writes it
    several times faster than the json module."""
    return orjson.dumps(
        {
            "id": accepted.message.id,
            "deliveries": [
                {
                    "id": d.id,
                    "recipient": d.recipient,
                    "state": d.state.value,
                    "reason": d.reason,
                    "due_at": when(d.due_at) if d.state is DeliveryState.DELAYED else None,
                    "reasons": decision_reasons(d.decision),
                }
                for d in accepted.deliveries
            ],
        }
    )


def _check_addresses(addresses: list[str], field: str) -> None:
    for index, address in enumerate(addresses):
        address_in(address, f"{field}[{index}]")


_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.body_encoding = email.charset.QP
_SMTP_BYTES = email.policy.compat32.clone(linesep="\r\n")
_RESERVED = frozenset({"from", "to", "cc", "bcc", "subject", "date", "message-id"})


def _header_value(value: str) -> str:
    return value if value.isascii() else email.header.Header(value, "utf-8").encode()


def _address(name: str, address: str) -> str:
    if not name:
        return address
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'
    encoded = email.header.Header(name, "utf-8").encode(linesep="\r\n")
    return f"{encoded} <{address}>"


_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to", "sender"})


def _address_header(value: str) -> str:
    """An address header's value: display names RFC 2047-encoded, each address as it is.

    Encoding the whole value (`_header_value`) made `Jürgen <shop@example.com>` one encoded
    word, which is never an address (RFC 2047 5): the message had no sender left. An address
    that is not ASCII (SMTPUTF8, RFC 6532) is written as UTF-8: it is carried as surrogate
    escapes, which the compat32 generator writes out as the bytes they stand for.
    """
    if value.isascii():
        return value
    pairs = email.utils.getaddresses([value])
    if not pairs or any(not address for _, address in pairs):
        return _header_value(value)  # not a list of addresses: as any other header
    written = [_address(name, address) for name, address in pairs]
    if all(one.isascii() for one in written):
        return ", ".join(written)  # the generator folds it where it is long
    raw = ",\r\n ".join(written)  # written as it is: folded here
    return raw.encode("utf-8").decode("ascii", "surrogateescape")


def _text_part(text: str, subtype: str) -> MIMEText:
    # MIMEText takes a Charset object (for quoted-printable); typeshed only lists str.
    return MIMEText(text, subtype, _UTF8_QP)  # type: ignore[arg-type]


def _plain_value(value: str) -> bool:
    """A header value the email package writes as it is: printable ASCII words, single spaces
    (what `[!-~]+( [!-~]+)*` matches, or empty), checked without a regular expression."""
    return (
        value.isascii()
        and value.isprintable()
        and "  " not in value
        and not value.startswith(" ")
        and not value.endswith(" ")
    )


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_FOLD_AT = 78
"""compat32 folds a header line longer than this."""


_QP_ENCODES = re.compile(r"[^\t\n\r -<>-~]")
"""What quoted-printable encodes in a body (`email.quoprimime`'s body map): all but printable
ASCII other than `=`, blank, tab and line breaks."""
_QP_LINE = 76
"""`email.quoprimime.body_encode` breaks a line longer than this."""


def _unencoded(body: str) -> bytes | None:
    """`_UTF8_QP.body_encode(body)` with CRLF line ends, where that is `body` as it is; else
    None.

    Such a body (ASCII that quoted-printable writes as it is, lines of at most 76 characters
    without a blank or tab at their end: nearly every short text) needs no encoding, and
    `email.quoprimime`'s loop over its lines cost some 20,000 instructions for one line
    (tests/unit/test_http_shortcuts.py compares both ways)."""
    if not body.isascii() or _QP_ENCODES.search(body) is not None:
        return None
    lines = body.splitlines()
    for line in lines:
        if len(line) > _QP_LINE or line.endswith((" ", "\t")):
            return None
    end = "\r\n" if body.endswith(("\r", "\n")) else ""
    return ("\r\n".join(lines) + end).encode("ascii")


_GENERATED = {
    subtype: (
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("MIME-Version", "1.0"),
        ("Content-Transfer-Encoding", "quoted-printable"),
    )
    for subtype in ("plain", "html")
}
"""The headers a directly written message starts with: short printable ASCII, checked once."""
_GENERATED_LINES = {
    subtype: "".join(f"{name}: {value}\r\n" for name, value in headers)
    for subtype, headers in _GENERATED.items()
}


class Built(NamedTuple):
    """A message built from a JSON payload, and its fingerprint where building gave it (a
    tuple: made for every send, and a frozen dataclass costs several times more to make)."""

    raw: bytes
    fingerprint: Fingerprint | None = None
    headers: Headers | None = None
    """Its headers as `Headers.parse` reads them, where building gave them."""


class _Template(NamedTuple):
    """What `_single_part` writes of a message that is the same for every recipient of the
    same content: all but its To, Date and Message-ID."""

    before_to: str
    """The generated header lines and From."""
    after_to: str
    """Cc and Subject."""
    after_id: str
    """The payload's own header lines, the blank line."""
    body: bytes
    """Encoded."""
    fingerprint: Fingerprint
    domain: str | None
    """The Message-ID's."""
    known: bool
    """No value holds an encoded word, no name a colon or blank: `Headers.parse` reads each
    as written (To, Date and Message-ID are checked per message)."""
    first: tuple[tuple[str, str], ...]
    middle: tuple[tuple[str, str], ...]
    last: tuple[tuple[str, str], ...]
    """The headers of the three parts, as `Headers` holds them."""


def _single_part(payload: SendContent, now: datetime) -> Built | None:
    """`build_mime`'s bytes for the common message, written directly; None if it is not one.

    The common message: one part (text or HTML), every header short printable ASCII (so none
    is RFC 2047-encoded or folded), no payload header that replaces a generated one. For it,
    the email package's objects and generator only add cost: a third of a send's CPU time in
    the profile. The body is encoded by the same quoted-printable codec; the bytes are the
    same (tests/unit/test_build_mime.py compares both ways).

    What does not change from one recipient to the next (the body, its fingerprint, every
    header but To, Date and Message-ID, and their checks) is kept for the last few contents
    (`_templates`): a campaign sends one content to each person in a request of its own, and
    writing it again cost some 60,000 instructions a send.
    """
    if payload.text is not None and payload.html is not None:
        return None
    key = (
        payload.text,
        payload.html,
        payload.from_,
        tuple(payload.cc),
        payload.subject,
        tuple(payload.headers.items()),
    )
    template = _templates.get(key)
    if template is None:
        template = _template(payload)
        if template is None:
            return None
        if len(payload.text or payload.html or "") <= _TEMPLATE_BODY:
            _templates[key] = template
            if len(_templates) > _TEMPLATES:
                _templates.pop(next(iter(_templates), key), None)  # the oldest
    to = ", ".join(payload.to) if payload.to else None
    date = format_date(now)
    message_id = email.utils.make_msgid(domain=template.domain)
    known = template.known
    for name, value in (("To", to), ("Date", date), ("Message-ID", message_id)):
        if value is None:
            continue
        if len(name) + 2 + len(value) > _FOLD_AT or not _plain_value(value):
            return None
        known = known and "=?" not in value
    to_line, to_header = (f"To: {to}\r\n", (("To", to),)) if to is not None else ("", ())
    lines = (
        f"{template.before_to}{to_line}{template.after_to}"
        f"Date: {date}\r\nMessage-ID: {message_id}\r\n{template.after_id}"
    )
    return Built(
        lines.encode("ascii") + template.body,
        template.fingerprint,
        Headers(
            (
                *template.first,
                *to_header,
                *template.middle,
                ("Date", date),
                ("Message-ID", message_id),
                *template.last,
            )
        )
        if known
        else None,
    )


_TEMPLATES = 64
_TEMPLATE_BODY = 64 * 1024
"""Contents of at most this many characters are kept, at most _TEMPLATES of them."""
_templates: dict[tuple[object, ...], _Template] = {}


def _template(payload: SendContent) -> _Template | None:
    """`_single_part`'s work for what every recipient of `payload`'s content gets; None if
    it is not the common message."""
    if any(name.lower() in _RESERVED for name in payload.headers):
        return None
    subtype, body = ("html", payload.html) if payload.html is not None else ("plain", payload.text)
    generated = _GENERATED[subtype]
    first = (*generated, ("From", payload.from_))
    middle: tuple[tuple[str, str], ...] = (("Cc", ", ".join(payload.cc)),) if payload.cc else ()
    middle += (("Subject", payload.subject),)
    last = tuple(payload.headers.items())
    known = True  # Headers.parse reads each as written: no encoded word to decode
    for name, value in (*first[len(generated) :], *middle, *last):
        if len(name) + 2 + len(value) > _FOLD_AT or not _plain_value(value):
            return None
        known = known and "=?" not in value and ":" not in name and " " not in name
    if not body:
        encoded = decoded = b""
    elif (plain := _unencoded(body)) is not None:  # quoted-printable leaves it as it is
        encoded = decoded = plain  # and so would decoding it
    else:
        encoded = _LINE_BREAKS.sub("\r\n", _UTF8_QP.body_encode(body)).encode()
        decoded = quopri.decodestring(encoded)
    # content_hash's reading of this message, without parsing it: the subject as written
    # and the one text part decoded as text_of decodes it.
    text = part_text(decoded, "utf-8", subtype)[:MAX_TEXT]
    return _Template(
        _GENERATED_LINES[subtype] + f"From: {payload.from_}\r\n",
        "".join(f"{name}: {value}\r\n" for name, value in middle),
        "".join(f"{name}: {value}\r\n" for name, value in last) + "\r\n",
        encoded,
        Fingerprint(
            text_hash(payload.subject, text),
            link_targets((text,), (body,) if subtype == "html" and body else ()),
        ),
        sender_domain(payload.from_),
        known,
        first,
        middle,
        last,
    )


def build_mime(payload: SendContent, now: datetime) -> bytes:
    """A MIME message from the JSON payload (Bcc stays in the envelope only).

    Built with the compat32 classes: five times cheaper than EmailMessage, and this runs for
    every HTTP send. Text parts are UTF-8, quoted-printable; non-ASCII headers RFC 2047. The
    common message (one part, short ASCII headers) is written directly (`_single_part`).
    """
    return build_message(payload, now).raw


def build_message(payload: SendContent, now: datetime) -> Built:
    """`build_mime`, with the fingerprint when the message was written directly."""
    return _single_part(payload, now) or Built(build_mime_objects(payload, now))


def build_mime_objects(payload: SendContent, now: datetime) -> bytes:
    """`build_mime` with the email package's objects and generator, whatever the message."""
    msg: Message
    if payload.text is not None and payload.html is not None:
        msg = MIMEMultipart("alternative")
        msg.attach(_text_part(payload.text, "plain"))
        msg.attach(_text_part(payload.html, "html"))
    elif payload.html is not None:
        msg = _text_part(payload.html, "html")
    else:
        msg = _text_part(payload.text or "", "plain")
    msg["From"] = _address_header(payload.from_)
    if payload.to:
        msg["To"] = _address_header(", ".join(payload.to))
    if payload.cc:
        msg["Cc"] = _address_header(", ".join(payload.cc))
    msg["Subject"] = _header_value(payload.subject)
    msg["Date"] = format_date(now)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender_domain(payload.from_))
    for name, value in payload.headers.items():
        if name.lower() in _RESERVED:
            del msg[name]
        address = name.lower() in _ADDRESS_HEADERS
        msg[name] = _address_header(value) if address else _header_value(value)
    return msg.as_bytes(policy=_SMTP_BYTES)


def _envelope_from_headers(raw: bytes) -> tuple[str, list[str]]:
    headers = Headers.parse(raw[: header_end(raw)])
    senders = email.utils.getaddresses(headers.get_all("From"))
    recipients = [
        address
        for _, address in email.utils.getaddresses(
            headers.get_all("To") + headers.get_all("Cc") + headers.get_all("Bcc")
        )
        if address
    ]
    return (senders[0][1] if senders else ""), recipients


MAX_LINE = 998
"""RFC 5322 2.1.1: octets in a line, its CRLF not counted. The SMTP intake refuses a longer line
(`500 5.6.0 Line too long`), and so does an SMTP upstream: accepted here, it could only fail
there."""


_LINE_PIECE = 256 * 1024
"""The line check's step: some 0.5 ms of CPU, so a 20 MB message never holds the loop long."""


async def _check_line_lengths(raw: bytes) -> None:
    """BadRequest naming the first line longer than MAX_LINE, if there is one."""
    if len(raw) <= MAX_LINE:
        return
    start, number = 0, 0
    while start < len(raw):
        stop = len(raw)
        if stop - start > _LINE_PIECE:  # cut after a line break; none in a piece: a long line
            stop = (raw.rfind(b"\n", start, start + _LINE_PIECE) + 1) or start + _LINE_PIECE
        lines = raw[start:stop].splitlines()
        if lines and max(map(len, lines)) > MAX_LINE:
            index, line = next((i, x) for i, x in enumerate(lines) if len(x) > MAX_LINE)
            raise BadRequest(
                f"line {number + index + 1} has {len(line)} octets; at most {MAX_LINE} "
                "(RFC 5322 2.1.1): fold a long header, encode a long body line "
                "(quoted-printable or base64)",
                "body",
            )
        number += len(lines)
        start = stop
        if start < len(raw):
            await asyncio.sleep(0)


async def _read_send(
    request: web.Request,
) -> tuple[bytes, str, list[str], FieldOverrides, Built | None]:
    """The message, sender, recipients and field overrides of a send request, and what
    building the message gave beside its bytes (its fingerprint, its headers), if built."""
    built = None
    if request.content_type == "message/rfc822":
        overrides = FieldOverrides()
        raw = await request.read()
        if not raw.strip():
            raise BadRequest("the message is empty", "body")
        await _check_line_lengths(raw)
        mail_from, recipients = _envelope_from_headers(raw)
    else:  # JSON, whatever the client called it (curl -d says form-urlencoded)
        payload, given = await read_send(request)
        # Each may be `Name <address>`: the header shows it as given, the envelope the address.
        mail_from = mailbox_address(payload.from_, "from")
        recipients = [
            mailbox_address(value, f"{field}[{index}]")
            for field, values in (("to", payload.to), ("cc", payload.cc), ("bcc", payload.bcc))
            for index, value in enumerate(values)
        ]
        overrides = overrides_of(given)  # after the addresses: their errors are named first
        now = api(request).clock.now()
        # Quoted-printable encoding is pure Python: seconds for a few MB of text.
        size = len(payload.text or "") + len(payload.html or "")
        if size <= LARGE:  # in_process's own test, without making its partial
            built = build_message(payload, now)
        else:
            built = await in_process(size, functools.partial(build_message, now=now), payload)
        raw = built.raw
    checked = built is not None  # a JSON payload's addresses were checked above
    if request.query_string:
        # ?from= and ?to= give the envelope, whatever the body: by default it is the message's.
        query = request.query
        checked = checked and "from" not in query and "to" not in query
        mail_from = query.get("from", mail_from)
        recipients = query.getall("to", recipients)
    null_sender = mail_from == NULL_SENDER  # a bounce's, as MAIL FROM:<> (DESIGN.md)
    if not mail_from:
        raise BadRequest(
            "no sender: give a From header or ?from=ADDRESS (?from=<> for a bounce's null sender)",
            "from",
        )
    if null_sender:
        mail_from = ""
    if not checked:
        if not null_sender:
            address_in(mail_from, "from")
        _check_addresses(list(recipients), "to")
    if not recipients:
        raise BadRequest("a message needs at least one recipient", "to")
    return raw, mail_from, list(recipients), overrides, built


async def fingerprint(request: web.Request) -> str:
    """A digest of what a send request asks for: its kind of body, the body and the query.

    A JSON body counts by its meaning: parsed and written again with sorted keys and no
    blanks, so a client that re-indents or reorders it on a retry is still retrying.
    """
    body = await request.read()
    kind = b"message/rfc822" if request.content_type == "message/rfc822" else b"json"
    if kind == b"json":
        body = _canonical_json(body)
    digest = hashlib.sha256()
    for part in (kind, request.query_string.encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(body)
    return "sha256:" + digest.hexdigest()


def _canonical_json(body: bytes) -> bytes:
    try:
        data = parse_json(body)
    except (ValueError, UnicodeDecodeError):
        return body  # not JSON: the send is refused anyway; the bytes are its identity
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _key_reused(exc: IdempotencyKeyReused) -> web.Response:
    # 422 as the IETF Idempotency-Key draft says for a key reused with another payload.
    error = {"code": "idempotency_key_reused", "message": str(exc), "field": "Idempotency-Key"}
    return web.json_response({"error": error}, status=422)


async def send(request: web.Request) -> web.Response:
    """Accept a message as JSON or as a raw `message/rfc822` body; 202 after the commit."""
    try:
        return await _send(request)
    except IdempotencyKeyReused:
        # Named as the client sent it, not as it is kept (scoped to the identity).
        return _key_reused(IdempotencyKeyReused(request.headers.get("Idempotency-Key", "")))


def _trace(remote: str | None) -> Trace:
    """The `Received:` line's source of a send from `remote`: one immutable record per
    client address, kept for the last few (a client sends many requests; each made anew
    cost a formatted string and a frozen dataclass)."""
    trace = _traces.get(remote)
    if trace is None:
        trace = _traces[remote] = Trace(f"HTTP client ([{remote or 'unknown'}])", "HTTP")
        if len(_traces) > _TRACES:
            _traces.pop(next(iter(_traces), remote), None)  # the oldest
    return trace


_TRACES = 256
_traces: dict[str | None, Trace] = {}


async def _send(request: web.Request) -> web.Response:
    ctx = api(request)
    started = monotonic()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY} characters", "Idempotency-Key")
    request_digest = await fingerprint(request) if key is not None else None
    if key is not None:
        key = idempotency_scope(identity(request).name, key)
    if key is not None and (replayed := await ctx.intake.replay(key, request_digest)) is not None:
        return web.Response(status=202, body=replayed, content_type="application/json")

    raw, mail_from, recipients, overrides, built = await _read_send(request)
    idempotency = Idempotency(key, accepted_body, request_digest) if key is not None else None
    try:
        accepted = await ctx.intake.accept(
            raw,
            mail_from,
            list(recipients),
            "http",
            overrides=overrides,
            idempotency=idempotency,
            trace=_trace(request.remote),
            fingerprint=built.fingerprint if built is not None else None,
            headers=built.headers if built is not None else None,
        )
    except InvalidMessage as exc:
        raise BadRequest(str(exc), exc.field or "body") from None
    except Conflict:
        # The same key was used by a concurrent request that committed first.
        if key is not None and (replayed := await ctx.intake.replay(key, request_digest)):
            return web.Response(status=202, body=replayed, content_type="application/json")
        raise
    finally:
        ctx.metrics.kept(ctx.metrics.ingress_duration, "http").observe(monotonic() - started)
    return web.Response(status=202, body=accepted_body(accepted), content_type="application/json")


async def views_of(request: web.Request, deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    """Deliveries with their transitions and policy verdicts, looked up for all at once."""
    records = await api(request).store.delivery_records([d.id for d in deliveries])
    return [delivery_view(d, records[d.id].transitions, records[d.id].outcomes) for d in deliveries]


async def view_of(request: web.Request, delivery: Delivery) -> dict[str, Any]:
    """A delivery with its transitions and policy verdicts."""
    (view,) = await views_of(request, [delivery])
    return view


async def get_message(request: web.Request) -> web.Response:
    """A message and the state and decision of each of its deliveries."""
    store = api(request).store
    message = await store.get_message(request.match_info["id"])
    if message is None:
        raise web.HTTPNotFound(reason="No such message")
    deliveries = await views_of(request, await store.deliveries_of(message.id))
    return web.json_response({**message_view(message), "deliveries": deliveries})


async def get_delivery(request: web.Request) -> web.Response:
    """One delivery with its history and every policy's verdict."""
    delivery = await api(request).store.get_delivery(request.match_info["id"])
    if delivery is None:
        raise web.HTTPNotFound(reason="No such delivery")
    return web.json_response(await view_of(request, delivery))


def _query(request: web.Request, **fixed: Any) -> DeliveryQuery:
    q = request.query
    state = None
    if "state" in q:
        try:
            state = DeliveryState(q["state"])
        except ValueError:
            allowed = ", ".join(s.value for s in DeliveryState)
            raise BadRequest(f"state: use one of {allowed}", "state") from None
    since = parse_time(q["since"], field="since") if "since" in q else None
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise BadRequest("limit: must be a whole number", "limit") from None
    if not 0 < limit <= MAX_DELIVERIES:
        raise BadRequest(f"limit: must be between 1 and {MAX_DELIVERIES}", "limit")
    # An empty filter is no filter, as in the other lists; a given one must be an address.
    recipient = address_in(q["recipient"], "recipient") if q.get("recipient") else None
    query = DeliveryQuery(
        state=state,
        campaign=q.get("campaign"),
        recipient=recipient,
        since=since,
        after=q.get("cursor"),
        limit=limit,
    )
    return replace(query, **fixed)


async def _page(request: web.Request, query: DeliveryQuery) -> dict[str, Any]:
    page = await api(request).store.list_deliveries(query)
    return {
        "deliveries": await views_of(request, page.deliveries),
        "next_cursor": page.next,
    }


async def list_deliveries(request: web.Request) -> web.Response:
    """Deliveries, newest first, filtered by state, campaign, recipient and since."""
    return web.json_response(await _page(request, _query(request)))


async def timeline(request: web.Request) -> web.Response:
    """Everything a person was sent, spared or is waiting for, and why; newest first."""
    address = address_in(request.match_info["address"], "address")
    store = api(request).store
    body = await _page(request, _query(request, recipient=address))
    events = await store.events(address)
    body["recipient"] = address
    body["events"] = [event_view(e) for e in reversed(events)]
    suppression = await store.get_suppression(address)
    body["suppression"] = (
        None
        if suppression is None
        else {
            "reason": suppression.reason.value,
            "source": suppression.source,
            "created_at": when(suppression.created_at),
            "created_by": suppression.created_by,
            # What the running config does with it: a suppression alone drops nothing.
            **api(request).suppressions().view(),
        }
    )
    return web.json_response(body)
