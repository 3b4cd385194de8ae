"""Mailgun `POST /v3/{domain}/messages` (multipart or urlencoded) and `/v3/{domain}/messages.mime`.

Basic auth `api:<key>`, the key a sendguard API token. Without `recipient-variables` the
message goes to all its recipients as one message (one delivery each); with them, each
To recipient gets a message of their own with `%recipient.<name>%` filled in and only their
own address in To, and every Cc and Bcc recipient a copy of each, as Mailgun's batch sending
does. Answers `{"id": "<...>", "message": "Queued.
Thank you."}`; errors `{"message": ...}` (400), `Forbidden` (401).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from sendguard.delivery.passthrough import MailgunFile, dump_mailgun
from sendguard.esp_request import EspRequest
from sendguard.ingress.esp.mapping import (
    Attachment,
    EspError,
    Outgoing,
    Submission,
    authenticate,
    check_addresses,
    sendguard_fields,
    submit,
    substitute,
    template_text,
)
from sendguard.ingress.payloads import parse_json
from sendguard.intake import Accepted


def reply_error(exc: EspError) -> web.Response:
    """Mailgun's error shapes."""
    if exc.status == 401:
        return web.Response(status=401, text="Forbidden")
    return web.json_response({"message": str(exc)}, status=exc.status)


@dataclass(frozen=True)
class Form:
    """A form's fields (repeatable) and files."""

    fields: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, Attachment], ...]

    def all(self, name: str) -> list[str]:
        """Every value of `name`; comma lists stay as they are."""
        return [v for k, v in self.fields if k == name]

    def one(self, name: str) -> str | None:
        """The first value of `name`."""
        values = self.all(name)
        return values[0] if values else None


def read_form(content_type: str, raw: bytes) -> Form:
    """A multipart/form-data or urlencoded body, read from bytes once."""
    if content_type.startswith("multipart/"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        if not parsed.is_multipart():
            raise EspError(400, "the multipart body cannot be read")
        fields, files = [], []
        for part in parsed.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            payload = part.get_payload(decode=True)
            content = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename()
            if filename is not None or name in ("attachment", "inline", "message"):
                files.append(
                    (
                        name,
                        Attachment(
                            filename or name,
                            part.get_content_type(),
                            content,
                            filename or name if name == "inline" else None,
                        ),
                    )
                )
            else:
                charset = part.get_content_charset() or "utf-8"
                fields.append((name, content.decode(charset, errors="replace")))
        return Form(tuple(fields), tuple(files))
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise EspError(400, "the form is not UTF-8") from None
    return Form(tuple(parse_qsl(text, keep_blank_values=True)), ())


def _addresses(form: Form, name: str) -> tuple[str, ...]:
    entries = tuple(
        f"{n} <{a}>" if n else a
        for value in form.all(name)
        for n, a in email.utils.getaddresses([value])
        if a
    )
    check_addresses(entries, name)
    return entries


def _fields(form: Form) -> list[tuple[str, str, str]]:
    variables = {k[2:]: v for k, v in form.fields if k.startswith("v:")}
    fields = [(h, v, f"v:{f.removeprefix('v.')}") for h, v, f in sendguard_fields(variables, "v")]
    named = {h for h, _, _ in fields}
    if "X-Sendguard-Campaign" not in named:
        if variables.get("campaign"):
            fields.append(("X-Sendguard-Campaign", variables["campaign"], "v:campaign"))
        elif tag := form.one("o:tag"):
            fields.append(("X-Sendguard-Campaign", tag, "o:tag"))
    when = form.one("o:deliverytime")
    if when is not None and "X-Sendguard-Not-Before" not in named:
        try:
            moment = email.utils.parsedate_to_datetime(when)
        except (TypeError, ValueError):
            raise EspError(400, f"o:deliverytime: {when!r} is not an RFC 2822 date") from None
        if moment.tzinfo is None:
            raise EspError(400, f"o:deliverytime: {when!r} needs a time zone")
        fields.append(("X-Sendguard-Not-Before", moment.isoformat(), "o:deliverytime"))
    return fields


def _headers(form: Form) -> list[tuple[str, str]]:
    headers = [(k[2:], v) for k, v in form.fields if k.startswith("h:")]
    variables = {
        k[2:]: v for k, v in form.fields if k.startswith("v:") and not k.startswith("v:sendguard_")
    }
    if variables:  # what Mailgun adds, so the receiving side's webhooks see them
        headers.append(("X-Mailgun-Variables", json.dumps(variables)))
    return headers


def _original(
    form: Form,
    template: str | None,
    *,
    mime: bool = False,
    to: str | None = None,
    variables: dict[str, Any] | None = None,
) -> EspRequest:
    """The request kept for pass-through; for one batch recipient (`to`), only their own
    address, the Cc and Bcc recipients (who get a copy of each batch message) and
    `recipient-variables` with the batch recipient's own values under each of those
    addresses, so the copies read as the batch recipient's message does."""
    fields = list(form.fields)
    if to is not None:
        copies = [(k, v) for k, v in fields if k in ("cc", "bcc")]
        addresses = email.utils.getaddresses([to, *(v for _, v in copies)])
        own = {address: variables or {} for _, address in addresses if address}
        fields = [(k, v) for k, v in fields if k not in ("to", "cc", "bcc", "recipient-variables")]
        fields += [("to", to), *copies, ("recipient-variables", json.dumps(own))]
    files = [MailgunFile(n, a.filename, a.content_type, a.content) for n, a in form.files]
    return EspRequest("mailgun", dump_mailgun(fields, files, mime=mime), template)


def _template_variables(form: Form) -> Any:
    text = form.one("t:variables") or form.one("h:X-Mailgun-Variables") or "{}"
    try:
        return parse_json(text)
    except ValueError:
        raise EspError(400, "t:variables: not valid JSON", "t:variables") from None


def parse(form: Form) -> list[Outgoing]:
    """The messages of a messages request."""
    template = form.one("template") or None
    sender = form.one("from")
    if not sender:
        raise EspError(400, "from parameter is missing", "from")
    check_addresses([sender], "from")
    to = _addresses(form, "to")
    if not to:
        raise EspError(400, "to parameter is missing", "to")
    text, html = form.one("text"), form.one("html")
    if template is not None and text is None and html is None:
        text = template_text("Mailgun", template, _template_variables(form))
    if text is None and html is None:
        raise EspError(400, "Need at least one of 'text' or 'html' parameters specified", "text")
    message = Outgoing(
        sender=sender,
        to=to,
        cc=_addresses(form, "cc"),
        bcc=_addresses(form, "bcc"),
        subject=form.one("subject") or "",
        text=text,
        html=html,
        headers=tuple(_headers(form)),
        attachments=tuple(a for name, a in form.files if name in ("attachment", "inline")),
        fields=tuple(_fields(form)),
        original=_original(form, template),
    )
    variables_text = form.one("recipient-variables")
    if variables_text is None:
        return [message]
    try:
        variables = parse_json(variables_text)
    except ValueError:
        raise EspError(400, "recipient-variables: not valid JSON", "recipient-variables") from None
    if not isinstance(variables, dict):
        raise EspError(400, "recipient-variables: must be an object", "recipient-variables")
    out = []
    # Batch sending: one message per To recipient, each also to every Cc and Bcc recipient
    # (as Mailgun sends it: they get a copy of each).
    for entry in to:
        address = email.utils.parseaddr(entry)[1]
        own: Any = variables.get(address)
        own = own if isinstance(own, dict) else {}
        values = {f"%recipient.{k}%": str(v) for k, v in own.items()}
        out.append(
            replace(
                message,
                to=(entry,),
                subject=substitute(message.subject, values) or "",
                text=substitute(message.text, values),
                html=substitute(message.html, values),
                original=_original(form, template, to=entry, variables=own),
            )
        )
    return out


def parse_mime(form: Form) -> list[Outgoing]:
    """The message of a messages.mime request: the MIME as given, recipients from `to`."""
    to = _addresses(form, "to")
    if not to:
        raise EspError(400, "to parameter is missing", "to")
    files = [a for name, a in form.files if name == "message"]
    if not files:
        raise EspError(400, "message parameter is missing", "message")
    raw = files[0].content
    head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    sender = str(head.get("From", ""))
    if not email.utils.parseaddr(sender)[1]:
        raise EspError(400, "the MIME message has no From header", "message")
    return [
        Outgoing(
            sender=sender,
            to=(),
            bcc=to,
            raw=raw,
            fields=tuple(_fields(form)),
            original=_original(form, None, mime=True),
        )
    ]


def _credentials(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, key = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return key if user == "api" else None


def _answer(domain: str) -> Any:
    def answer(outcomes: Sequence[Accepted | EspError]) -> bytes:
        for outcome in outcomes:
            if isinstance(outcome, EspError):
                raise outcome
        first = outcomes[0]
        assert isinstance(first, Accepted)
        return json.dumps(
            {"id": f"<{first.message.id}@{domain}>", "message": "Queued. Thank you."}
        ).encode()

    return answer


async def _send(request: web.Request, mime: bool) -> web.Response:
    who = authenticate(request, _credentials(request))
    domain = request.match_info["domain"]
    form = read_form(request.headers.get("Content-Type", ""), await request.read())
    messages = parse_mime(form) if mime else parse(form)
    if (form.one("o:testmode") or "").lower() in ("yes", "true"):
        # Mailgun's test mode accepts and never delivers; so does sendguard.
        body = {"id": f"<testmode@{domain}>", "message": "Queued. Thank you."}
        return web.json_response(body)
    submission = Submission("mailgun", messages, _answer(domain), whole=True)
    body_bytes = await submit(request, who, submission)
    return web.Response(body=body_bytes, content_type="application/json")


async def messages(request: web.Request) -> web.Response:
    """Mailgun messages."""
    return await _send(request, mime=False)


async def messages_mime(request: web.Request) -> web.Response:
    """Mailgun messages.mime."""
    return await _send(request, mime=True)
