"""SendGrid v3 `POST /v3/mail/send`: the API key is a sendguard API token (`Bearer`).

Each personalization is its own message (its subject, headers, substitutions and custom_args
are its own), and each of its recipients its own delivery; the body with that one
personalization is kept for pass-through (a `template_id` send can only leave that way).
Answers as SendGrid does: 202 with an empty body and `X-Message-Id`; errors
`{"errors": [{"message", "field", "help"}]}`.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sendguard.esp_request import EspRequest
from sendguard.ingress.esp.mapping import (
    Attachment,
    EspError,
    Outgoing,
    Submission,
    authenticate,
    check_addresses,
    decode_base64,
    sendguard_fields,
    submit,
    substitute,
    template_text,
)
from sendguard.ingress.payloads import parse_json
from sendguard.intake import Accepted


def reply_error(exc: EspError) -> web.Response:
    """SendGrid's error shape."""
    body = {"errors": [{"message": str(exc), "field": exc.field, "help": None}]}
    return web.json_response(body, status=exc.status)


# The accepted form of a field that must be an array or an object, shown in the 400 when a
# string (or the other shape) is given, as POST /v1/messages shows it. SendGrid's own API
# refuses the same shapes ("Invalid type. Expected: array, given: string.").
_EMAIL = '{"email": "ann@example.org"}'
_FORMS = {
    "personalizations": f'"personalizations": [{{"to": [{_EMAIL}]}}]',
    "to": f'"to": [{_EMAIL}]',
    "cc": f'"cc": [{_EMAIL}]',
    "bcc": f'"bcc": [{_EMAIL}]',
    "from": '"from": {"email": "shop@example.com"}',
    "reply_to": '"reply_to": {"email": "help@example.com"}',
    "reply_to_list": '"reply_to_list": [{"email": "help@example.com"}]',
    "categories": '"categories": ["spring"]',
    "content": '"content": [{"type": "text/plain", "value": "Hi"}]',
    "attachments": '"attachments": [{"content": "<base64>", "filename": "a.pdf"}]',
}


def _form(where: str) -> str:
    """`: <the accepted form>` for the field at `where` (by its last name), if one is known."""
    name = where.rpartition(".")[2]
    if name.endswith("]"):  # an item of an array of addresses
        return f": {_EMAIL}" if name.split("[")[0] in ("to", "cc", "bcc") else ""
    form = _FORMS.get(name)
    return f": {form}" if form else ""


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EspError(400, f"{where} must be an object{_form(where)}", where)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EspError(400, f"{where} must be an array{_form(where)}", where)
    return value


RESERVED_HEADERS = (
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "Content-Type",
    "Content-Transfer-Encoding",
    "To",
    "From",
    "Subject",
    "Reply-To",
    "CC",
    "BCC",
)
"""The headers SendGrid refuses in `headers` (its API reference and official SDKs): each has
its own field (`personalizations[].bcc`, `subject`, `reply_to`, ...) or is SendGrid's."""
_RESERVED = frozenset(name.lower() for name in RESERVED_HEADERS)


def _headers(value: Any, where: str) -> dict[str, str]:
    """`headers` (of the body or a personalization): EspError 400 naming a reserved one."""
    headers = _strings(value, where)
    for name in headers:
        if name.lower() in _RESERVED:
            path = f"{where}.{name}"
            raise EspError(
                400,
                f"{path}: {name} is a reserved header; you may not set any of"
                f" {', '.join(RESERVED_HEADERS)} in headers. Use the field made for it"
                " (personalizations[].to / cc / bcc, from, subject, reply_to, content)",
                path,
            )
    return headers


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    items = _object(value, where)
    for key, item in items.items():
        if not isinstance(item, str):
            raise EspError(400, f"{where}.{key} must be a string", f"{where}.{key}")
    return items


def _address(value: Any, where: str) -> str:
    item = _object(value, where)
    address = item.get("email")
    if not isinstance(address, str) or not address:
        raise EspError(400, f"{where}.email is required", f"{where}.email")
    if len(email.utils.getaddresses([address])) != 1:
        # SendGrid refuses it; taking it as several recipients would send to people the
        # request never listed one by one.
        path = f"{where}.email"
        raise EspError(
            400,
            f"{path}: Does not contain a valid address. It holds several addresses"
            f" ({address!r}); give each recipient its own object in the array",
            path,
        )
    check_addresses([address], f"{where}.email", indexed=False)
    name = item.get("name")
    if isinstance(name, str) and name:
        return f'"{name.replace(chr(34), "")}" <{address}>'
    return address


def _categories(body: Mapping[str, Any]) -> list[str]:
    categories = _list(body.get("categories"), "categories")
    for index, category in enumerate(categories):
        if not isinstance(category, str):  # else `{}` would become the campaign "{}"
            raise EspError(400, f"categories[{index}] must be a string", f"categories[{index}]")
    return categories


def _send_at(value: Any, where: str) -> str:
    fix = "seconds since 1970 (a UNIX timestamp), like 1796220000"
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EspError(400, f"{where} must be {fix}", where)
    try:
        return datetime.fromtimestamp(value, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        # Milliseconds (JavaScript's Date.now()) land tens of thousands of years ahead.
        raise EspError(400, f"{where}: {value} is past the year 9999; use {fix}", where) from None


def _content(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    text = html = None
    for index, item in enumerate(_list(data.get("content"), "content")):
        part = _object(item, f"content[{index}]")
        kind, value = part.get("type"), part.get("value")
        if not isinstance(value, str):
            raise EspError(400, "content.value is required", f"content[{index}].value")
        if kind == "text/plain":
            text = value
        elif kind == "text/html":
            html = value
        else:
            raise EspError(
                400, "content.type must be text/plain or text/html", f"content[{index}].type"
            )
    return text, html


def _attachments(data: Mapping[str, Any]) -> tuple[Attachment, ...]:
    out = []
    for index, item in enumerate(_list(data.get("attachments"), "attachments")):
        where = f"attachments[{index}]"
        part = _object(item, where)
        if not isinstance(part.get("content"), str) or not isinstance(part.get("filename"), str):
            raise EspError(400, f"{where} needs content and filename", where)
        inline = part.get("disposition") == "inline" and part.get("content_id")
        out.append(
            Attachment(
                part["filename"],
                str(part.get("type") or "application/octet-stream"),
                decode_base64(part["content"], f"{where}.content"),
                str(part["content_id"]) if inline else None,
            )
        )
    return tuple(out)


def _subject_and_text(
    p: Mapping[str, Any],
    body: Mapping[str, Any],
    template: str | None,
    text: str | None,
    html: str | None,
) -> tuple[str, str | None]:
    """A personalization's subject and text; a dynamic template carries its own subject, and
    its stored copy shows the template and its data instead of content."""
    subject = p.get("subject", body.get("subject"))
    if template is None:
        if not isinstance(subject, str) or not subject:
            raise EspError(400, "The subject is required.", "subject")
        return subject, text
    if subject is not None and not isinstance(subject, str):
        raise EspError(400, "subject must be a string", "subject")
    if text is None and html is None:
        data = p.get("dynamic_template_data", p.get("substitutions")) or {}
        text = template_text("SendGrid", template, data)
    return subject or "", text


def parse(data: Any) -> list[Outgoing]:
    """One Outgoing per personalization of a mail/send body."""
    body = _object(data, "body")
    template = body.get("template_id")
    if template is not None and (not isinstance(template, str) or not template):
        raise EspError(400, "template_id must be a non-empty string", "template_id")
    if "from" not in body:
        raise EspError(400, "The from object must be provided for every email send.", "from")
    sender = _address(body["from"], "from")
    personalizations = _list(body.get("personalizations"), "personalizations")
    if not 1 <= len(personalizations) <= 1000:
        raise EspError(
            400,
            "The personalizations field is required and must have 1 to 1000 items.",
            "personalizations",
        )
    text, html = _content(body)
    if text is None and html is None and template is None:
        raise EspError(
            400, "Unless a valid template_id is provided, content is required.", "content"
        )
    reply_to = tuple(
        _address(r, f"reply_to_list[{i}]")
        for i, r in enumerate(_list(body.get("reply_to_list"), "reply_to_list"))
    )
    if body.get("reply_to") is not None:
        reply_to = (_address(body["reply_to"], "reply_to"),)
    headers = _headers(body.get("headers"), "headers")
    custom = _strings(body.get("custom_args"), "custom_args")
    categories = _categories(body)
    attachments = _attachments(body)
    out = []
    for index, item in enumerate(personalizations):
        where = f"personalizations[{index}]"
        p = _object(item, where)
        to = tuple(
            _address(a, f"{where}.to[{i}]") for i, a in enumerate(_list(p.get("to"), f"{where}.to"))
        )
        if not to:
            raise EspError(
                400, "The to array is required for all personalization objects.", f"{where}.to"
            )
        cc = tuple(
            _address(a, f"{where}.cc[{i}]") for i, a in enumerate(_list(p.get("cc"), f"{where}.cc"))
        )
        bcc = tuple(
            _address(a, f"{where}.bcc[{i}]")
            for i, a in enumerate(_list(p.get("bcc"), f"{where}.bcc"))
        )
        subject, own_text = _subject_and_text(p, body, template, text, html)
        subs = _strings(p.get("substitutions"), f"{where}.substitutions")
        args = {**custom, **_strings(p.get("custom_args"), f"{where}.custom_args")}
        fields = sendguard_fields(args, "custom_args")
        named = {h for h, _, _ in fields}
        if "X-Sendguard-Campaign" not in named:
            if args.get("campaign"):
                fields.append(("X-Sendguard-Campaign", args["campaign"], "custom_args.campaign"))
            elif categories:
                fields.append(("X-Sendguard-Campaign", categories[0], "categories[0]"))
        send_at = p.get("send_at", body.get("send_at"))
        if send_at is not None and "X-Sendguard-Not-Before" not in named:
            fields.append(("X-Sendguard-Not-Before", _send_at(send_at, "send_at"), "send_at"))
        merged = {**headers, **_headers(p.get("headers"), f"{where}.headers")}
        out.append(
            Outgoing(
                sender=sender,
                to=to,
                cc=cc,
                bcc=bcc,
                subject=substitute(subject, subs) or "",
                text=substitute(own_text, subs),
                html=substitute(html, subs),
                reply_to=reply_to,
                headers=tuple((k, substitute(v, subs) or "") for k, v in merged.items()),
                attachments=attachments,
                fields=tuple(fields),
                original=EspRequest(
                    "sendgrid",
                    json.dumps({**body, "personalizations": [p]}, ensure_ascii=False).encode(),
                    template,
                ),
                template_field="template_id",
            )
        )
    return out


def _answer(outcomes: Sequence[Accepted | EspError]) -> bytes:
    for outcome in outcomes:
        if isinstance(outcome, EspError):
            # SendGrid takes a request whole or not at all: report the first bad one.
            raise outcome
    first = outcomes[0]
    assert isinstance(first, Accepted)
    return first.message.id.encode()


async def mail_send(request: web.Request) -> web.Response:
    """SendGrid v3 mail/send."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    who = authenticate(request, key.strip() if scheme.lower() == "bearer" else None)
    raw = await request.read()
    try:
        data = parse_json(raw)
    except (ValueError, UnicodeDecodeError):
        raise EspError(400, "Bad Request: the body is not valid JSON", None) from None
    messages = parse(data)
    settings = data.get("mail_settings") if isinstance(data, dict) else None
    sandbox = isinstance(settings, dict) and (settings.get("sandbox_mode") or {}).get("enable")
    if sandbox:  # validated, never sent: what SendGrid's sandbox mode does
        return web.Response(status=200)
    message_id = await submit(request, who, Submission("sendgrid", messages, _answer, whole=True))
    return web.Response(status=202, headers={"X-Message-Id": message_id.decode()})
