"""What the SendGrid, Postmark and Mailgun send endpoints share: one request becomes one or more
rendered messages, each judged and committed through the same intake as `POST /v1/messages`,
each with its part of the request as the client wrote it (`Outgoing.original`), kept for
pass-through to the same ESP. A stored-template send is accepted only when its route leads
to an upstream of that ESP (nothing else could render it).

The ESP's sendguard fields (campaign, class, not-before, ...) become `X-Sendguard-*` headers of
the rendered message, so they are read, validated and stripped before forwarding exactly as for
SMTP; an invalid value is reported under the ESP's own field name (`custom_args.sendguard_wait`).

Retries: the SDKs retry on timeouts. An `Idempotency-Key` header works as on `/v1/messages`; a
request byte-identical to one accepted from the same token within `esp.retry_window` (default
10 minutes) is answered with the first answer and sends nothing again. The answer is committed
with the request's messages, in one transaction.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

from aiohttp import web

from sendguard.address import validate_address
from sendguard.config import EspOptions
from sendguard.deliveries import NewMessage
from sendguard.delivery.routing import RouteKey, Routing
from sendguard.delivery.upstream import Upstream, passing_through
from sendguard.errors import (
    Conflict,
    IdempotencyKeyReused,
    InvalidAddress,
    InvalidMessage,
    StoreUnavailable,
)
from sendguard.esp_request import EspRequest
from sendguard.fields import FIELDS, read_fields
from sendguard.headers import Headers, Trace
from sendguard.identity import Identity, Role
from sendguard.ingress.http_context import IDENTITY_KEY, TOKENS, api, refuse_announced_oversize
from sendguard.ingress.payloads import is_single_line
from sendguard.intake import (
    IDEMPOTENCY_RETENTION,
    Accepted,
    ManyIdempotency,
    idempotency_scope,
)
from sendguard.message import Message

ESP_CONFIG: web.AppKey[EspOptions] = web.AppKey("esp", EspOptions)
MAX_KEY = 200

SENDGUARD_KEYS: Mapping[str, str] = {f.json_name: f.headers[0] for f in FIELDS}
"""`sendguard_<key>` in custom_args / Metadata / `v:` variables → the header it stands for:
every field of `sendguard.fields.FIELDS`, by its JSON name, to its X-Sendguard-* header."""


class EspError(Exception):
    """An answer other than success, rendered in the ESP's own error shape."""

    def __init__(self, status: int, message: str, field: str | None = None, code: int = 0):
        self.status = status
        self.field = field
        self.code = code
        """Postmark's ErrorCode (300 invalid request, 10 bad token, ...)."""
        super().__init__(message)


@dataclass(frozen=True)
class Attachment:
    """A file to attach (or to show inline when `content_id` is set)."""

    filename: str
    content_type: str
    content: bytes
    content_id: str | None = None


@dataclass(frozen=True)
class Outgoing:
    """One message to render: what one personalization / email / recipient asks for."""

    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    reply_to: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()
    """(X-Sendguard header, value, the ESP field it came from)."""
    raw: bytes | None = field(default=None, repr=False)
    """A complete MIME message (Mailgun's messages.mime) instead of the parts above."""
    original: EspRequest | None = field(default=None, repr=False)
    """The message's part of the request as the client wrote it, for pass-through."""
    template_field: str = "template"
    """Where the request names its stored template (for the error when it cannot leave)."""

    @property
    def mail_from(self) -> str:
        """The bare sender address."""
        return email.utils.parseaddr(self.sender)[1]

    @property
    def recipients(self) -> list[str]:
        """Every envelope recipient, bare (To, Cc, then Bcc)."""
        return [a for _, a in email.utils.getaddresses([*self.to, *self.cc, *self.bcc]) if a]


def sendguard_fields(values: Mapping[str, object], where: str) -> list[tuple[str, str, str]]:
    """The fields named `sendguard_<key>` in an ESP's free-form key/value map (`where`)."""
    out = []
    for key, value in values.items():
        name = key.removeprefix("sendguard_") if key.startswith("sendguard_") else None
        if name is None:
            continue
        header = SENDGUARD_KEYS.get(name)
        if header is None:
            allowed = ", ".join(f"sendguard_{k}" for k in SENDGUARD_KEYS)
            path = f"{where}.{key}"
            raise EspError(400, f"{path}: unknown sendguard field; use {allowed}", path)
        out.append((header, str(value), f"{where}.{key}"))
    return out


def check_addresses(values: Sequence[str], where: str, *, indexed: bool = True) -> None:
    """Every address in `values` (header entries like `Ana <ana@example.org>`) is valid.

    An error names `where[i]`; without `indexed`, `where` alone (a field holding one address,
    like SendGrid's `email`)."""
    for index, (_, address) in enumerate(email.utils.getaddresses(list(values))):
        try:
            validate_address(address)
        except InvalidAddress as exc:
            path = f"{where}[{index}]" if indexed else where
            raise EspError(400, f"{path}: {exc}", path) from None


def decode_base64(value: str, where: str) -> bytes:
    """Attachment content as the ESPs send it."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EspError(400, f"{where}: not valid base64", where) from None


def template_text(esp: str, template: str, data: object) -> str:
    """The stored copy's text for a stored-template send: the template and its data, so the
    review queue, content patterns and repetition see what varies (the ESP renders it)."""
    shown = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return f"{esp} stored template {template}, with:\n{shown}\n"


def refuse_template(esp: str, field: str, label: str) -> str:
    """Why a stored-template send is refused: no upstream of that ESP would send it."""
    return (
        f"{field}: the message names a {esp} stored template, which only {esp} can render;"
        f" sendguard passes the request through only when the message's upstream is of kind"
        f" {esp}, and its route chooses {label!r}. Route it to a {esp} upstream (`routes:`),"
        f" or send the content itself"
    )


def passes_through(upstream: Upstream, message: Message, esp: str) -> tuple[bool, str]:
    """Whether `message` would leave through an upstream of `esp` (pass-through), and the
    label of the upstream its route chooses."""
    routing = getattr(upstream, "routing", None)
    if isinstance(routing, Routing):
        chosen = routing.choose(RouteKey.of(message))
        upstream, label = chosen.upstream, chosen.label
    else:
        label = upstream.name
    return passing_through(upstream, esp) is not None, label


def substitute(text: str | None, values: Mapping[str, str]) -> str | None:
    """`text` with every key of `values` replaced literally (SendGrid's legacy substitutions,
    Mailgun's `%recipient.name%`)."""
    if text is None:
        return None
    for key, value in values.items():
        text = text.replace(key, value)
    return text


_SMTP_BYTES = email.policy.SMTP.clone(max_line_length=998)
_RESERVED = frozenset({"from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to"})


def _fill(msg: EmailMessage, out: Outgoing) -> None:
    """The text and HTML parts, then attachments (inline ones in multipart/related)."""
    if out.text is not None or out.html is None:
        msg.set_content(out.text or "", cte="quoted-printable")
    if out.html is not None:
        if out.text is not None:
            msg.add_alternative(out.html, subtype="html", cte="quoted-printable")
        else:
            msg.set_content(out.html, subtype="html", cte="quoted-printable")
    for item in out.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if item.content_id is not None:
            if not msg.is_multipart() or msg.get_content_subtype() != "related":
                msg.make_related()
            msg.add_related(
                item.content,
                maintype=maintype or "application",
                subtype=subtype or "octet-stream",
                cid=f"<{item.content_id.strip('<>')}>",
                filename=item.filename,
            )
        else:
            msg.add_attachment(
                item.content,
                maintype=maintype or "application",
                subtype=subtype or "octet-stream",
                filename=item.filename,
            )


def _single_lines(out: Outgoing) -> None:
    """EspError 400 naming the input whose value would break its header (CR, LF or NUL)."""
    given = [
        ("from", out.sender),
        *(("to", a) for a in out.to),
        *(("cc", a) for a in out.cc),
        *(("reply_to", a) for a in out.reply_to),
        ("subject", out.subject),
        *out.headers,
        *((where, value) for _, value, where in out.fields),
    ]
    for where, value in given:
        if not is_single_line(value):
            raise EspError(
                400, f"{where}: must be a single line (no CR, LF or NUL)", where, code=300
            )
    for name, _ in out.headers:
        if not name or not is_single_line(name) or any(c in name for c in ": \t"):
            raise EspError(400, f"{name!r} is not a header name", "headers", code=300)


def render(out: Outgoing, now: datetime) -> bytes:
    """The MIME message for `out` (Bcc stays in the envelope only)."""
    _single_lines(out)
    fields = "".join(f"{h}: {v}\r\n" for h, v, _ in out.fields)
    if out.raw is not None:
        return fields.encode() + out.raw
    msg = EmailMessage()
    msg["From"] = out.sender
    if out.to:
        msg["To"] = ", ".join(out.to)
    if out.cc:
        msg["Cc"] = ", ".join(out.cc)
    if out.reply_to:
        msg["Reply-To"] = ", ".join(out.reply_to)
    msg["Subject"] = out.subject
    msg["Date"] = email.utils.format_datetime(now)
    msg["Message-ID"] = email.utils.make_msgid(domain=out.mail_from.rpartition("@")[2] or None)
    for name, value in out.headers:
        if name.lower() in _RESERVED:
            del msg[name]
        msg[name] = value
    for header, value, _ in out.fields:
        msg[header] = value
    _fill(msg, out)
    return msg.as_bytes(policy=_SMTP_BYTES)


def authenticate(request: web.Request, token: str | None) -> Identity:
    """The identity of a sendguard API token carried in the ESP's auth scheme; EspError 401."""
    name = request.app[TOKENS].identify(token) if token else None
    if name is None:
        raise EspError(401, "bad or missing API key", code=10)
    who = Identity(name, Role.API)
    request[IDENTITY_KEY] = who
    return who


def esp_config(request: web.Request) -> EspOptions:
    """The `esp:` section (its defaults when the app was built without one)."""
    return request.app.get(ESP_CONFIG) or EspOptions()


async def _digest(request: web.Request) -> str:
    digest = hashlib.sha256()
    parts = (request.path, request.content_type, request.query_string)
    for part in (p.encode() for p in parts):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(await request.read())
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Submission:
    """The messages of one ESP request and how its answer is written."""

    esp: str
    messages: Sequence[Outgoing]
    answer: Callable[[Sequence[Accepted | EspError]], bytes]
    """The body stored and replayed for this request, from each message's outcome."""
    whole: bool = False
    """The ESP takes the request whole or not at all (SendGrid, Mailgun): every message's
    sendguard fields are checked before any is committed, so a request answered with an
    error has sent nothing, and the corrected resend the error asks for sends nothing twice."""


async def submit(request: web.Request, who: Identity, submission: Submission) -> bytes:
    """Accept every message of `submission` (each recipient a delivery) and return the answer.

    A request seen before (same Idempotency-Key, or byte-identical within the retry window)
    is answered from the store. Every message is made and vetted before any is judged: in a
    request taken whole (`Submission.whole`) the first refusal refuses it all; otherwise (a
    Postmark batch) a bad message answers its own error in its place and the others go. The
    messages that go are judged in order and committed together with the stored answer, in
    one transaction (`Intake.accept_many`): all of them or none.
    """
    ctx = api(request)
    now = ctx.clock.now()
    key = request.headers.get("Idempotency-Key")
    digest = await _digest(request)
    if key is not None:
        if not 0 < len(key) <= MAX_KEY:
            raise EspError(400, f"Idempotency-Key must be 1 to {MAX_KEY} characters", "key")
        record_key = idempotency_scope(who.name, f"{submission.esp}:key:{key}")
        since = now - IDEMPOTENCY_RETENTION
    else:
        record_key = f"{submission.esp}:retry:{who.name}:{digest}"
        since = now - esp_config(request).retry_window
    try:
        stored = await ctx.store.idempotent_response(record_key, since)
    except StoreUnavailable:
        raise EspError(503, "the store is unavailable; try again later", code=500) from None
    if stored is not None:
        if key is not None and stored.fingerprint not in (None, digest):
            reused = IdempotencyKeyReused(key)
            raise EspError(422, str(reused), "Idempotency-Key", code=300)
        return stored.response

    _check_whole(submission)
    prepared, outcomes = await _prepare_all(request, submission, now)

    def answer(accepted: Sequence[Accepted]) -> bytes:
        taken = iter(accepted)
        return submission.answer([next(taken) if o is None else o for o in outcomes])

    if not prepared:
        return answer([])
    # Judged in order and committed together, the stored answer with them: the request is
    # sent whole or not at all, and a retry after it never sends anything twice.
    idempotency = ManyIdempotency(record_key, answer, digest, now - since)
    try:
        accepted = await ctx.intake.accept_many(prepared, submission.esp, idempotency=idempotency)
    except StoreUnavailable:
        raise EspError(503, "the store is unavailable; try again later", code=500) from None
    except Conflict:
        if (again := await ctx.store.idempotent_response(record_key, since)) is not None:
            return again.response
        raise EspError(409, "the same request is being sent concurrently", code=300) from None
    return answer(accepted)


async def _prepare_all(
    request: web.Request, submission: Submission, now: datetime
) -> tuple[list[NewMessage], list[EspError | None]]:
    """Every message made and vetted, before anything of the request is committed: the
    messages intake is to judge, and each message's refusal in its place (None: prepared).
    A request taken whole is refused whole by its first refusal (raised); Postmark's batch
    answers each refused message in its place."""
    outcomes: list[EspError | None] = []
    prepared: list[NewMessage] = []
    for out in submission.messages:
        try:
            prepared.append(await _prepare_one(request, submission.esp, out, now))
            outcomes.append(None)
        except EspError as exc:
            if submission.whole:
                raise
            outcomes.append(exc)
    return prepared, outcomes


def _check_whole(submission: Submission) -> None:
    """For a request taken whole or not at all: raise the first message's refusal, if any."""
    if submission.whole and len(submission.messages) > 1:
        for out in submission.messages:
            _check_fields(out)


def _check_fields(out: Outgoing) -> None:
    """Raise the EspError intake would for `out`'s sendguard fields, before anything of its
    request is committed. Read from their own headers (`X-Sendguard-*`), which is where the
    ESP mapping puts them; `headers:` sources configured for a field are intake's to read."""
    headers = Headers((*out.headers, *((h, v) for h, v, _ in out.fields)))
    try:
        read_fields(headers, {})
    except InvalidMessage as exc:
        raise _refusal(out, exc) from None


def _refusal(out: Outgoing, exc: InvalidMessage) -> EspError:
    """`exc` as the ESP's 400, naming the ESP field the sendguard field came from."""
    origin = {h.lower(): f for h, _, f in out.fields}
    name = origin.get((exc.field or "").lower(), exc.field)
    message = str(exc)
    if exc.field and name != exc.field:
        message = message.replace(exc.field, name or exc.field, 1)
    return EspError(400, message, name, code=300)


async def _prepare_one(request: web.Request, esp: str, out: Outgoing, now: datetime) -> NewMessage:
    """`out` rendered and made a message intake can judge (`Intake.prepare`); EspError 400
    when it is refused (no recipient, a bad field, a stored template no upstream sends)."""
    ctx = api(request)
    recipients = out.recipients
    if not recipients:
        raise EspError(400, "a message needs at least one recipient", "to", code=300)
    raw = render(out, now)
    original = out.original

    def vet(message: Message) -> None:
        if original is None or original.template is None:
            return
        ok, label = passes_through(ctx.upstream, message, esp)
        if not ok:
            raise InvalidMessage(
                refuse_template(esp, out.template_field, label), field=out.template_field
            )

    try:
        return await ctx.intake.prepare(
            raw,
            out.mail_from,
            recipients,
            esp,
            trace=Trace(f"{esp} API client ([{request.remote or 'unknown'}])", "HTTP"),
            esp_request=original,
            vet=vet,
        )
    except InvalidMessage as exc:
        raise _refusal(out, exc) from None


EspHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: EspHandler, reply: Callable[[EspError], web.Response]) -> EspHandler:
    """`handler` with every failure answered in the ESP's error shape via `reply`."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            refuse_announced_oversize(request)
            return await handler(request)
        except EspError as exc:
            return reply(exc)
        except StoreUnavailable:
            return reply(EspError(503, "the store is unavailable; try again later", code=500))
        except web.HTTPRequestEntityTooLarge:
            limit = api(request).config.max_body_size
            message = f"the body is larger than http.max_body_size ({limit} bytes)"
            return reply(EspError(413, message, code=300))

    run.__doc__ = handler.__doc__
    ANSWERS_IN_ESP_SHAPE.add(run)
    return run


ANSWERS_IN_ESP_SHAPE: set[EspHandler] = set()
"""The handlers `guarded` made: they refuse an oversized body themselves, in the ESP's shape."""
