"""Postmark `POST /email`, `/email/batch`, `/email/withTemplate`, `/email/batchWithTemplates`.

The server token (`X-Postmark-Server-Token`) is a sendguard API token. Each email is its own
message and each of its recipients its own delivery. Answers `{To, SubmittedAt, MessageID,
ErrorCode, Message}` (an array of them for a batch, each with its own ErrorCode); errors are
Postmark's: 401 with ErrorCode 10, 422 with ErrorCode 300 (invalid request) or 402 (bad JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    template_text,
)
from sendguard.ingress.http_context import api
from sendguard.ingress.payloads import parse_json
from sendguard.intake import Accepted

MAX_BATCH = 500
TEMPLATE_KEYS = ("TemplateId", "TemplateAlias", "TemplateModel")


def reply_error(exc: EspError) -> web.Response:
    """Postmark's error shape (it answers bad input with 422)."""
    status = 422 if exc.status == 400 else exc.status
    return web.json_response({"ErrorCode": exc.code or 300, "Message": str(exc)}, status=status)


def _text(email: dict[str, Any], key: str) -> str | None:
    value = email.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EspError(400, f"'{key}' must be a string", key, code=300)
    return value


def _list(email: dict[str, Any], key: str) -> tuple[str, ...]:
    if isinstance(email.get(key), list):
        # Postmark's API takes one string here (its own answer to an array is an error too).
        raise EspError(
            400,
            f"'{key}' must be one string of comma-separated addresses, not an array:"
            f' "{key}": "ann@example.org, bob@example.org"',
            key,
            code=300,
        )
    value = _text(email, key)
    if not value:
        return ()
    entries = tuple(part.strip() for part in value.split(",") if part.strip())
    try:
        check_addresses(entries, key)
    except EspError as exc:
        raise EspError(400, f"Error parsing '{key}': {exc}", key, code=300) from None
    return entries


def _headers(email: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    headers = []
    for index, item in enumerate(email.get("Headers") or []):
        if not isinstance(item, dict) or not isinstance(item.get("Name"), str):
            raise EspError(400, f"Headers[{index}] needs Name and Value", "Headers", code=300)
        headers.append((item["Name"], str(item.get("Value", ""))))
    return tuple(headers)


def _attachments(email: dict[str, Any]) -> tuple[Attachment, ...]:
    attachments = []
    for index, item in enumerate(email.get("Attachments") or []):
        name = f"Attachments[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("Content"), str):
            raise EspError(400, f"{name} needs Name and Content", name, code=300)
        attachments.append(
            Attachment(
                str(item.get("Name") or "attachment"),
                str(item.get("ContentType") or "application/octet-stream"),
                decode_base64(item["Content"], f"{name}.Content"),
                str(item["ContentID"]).removeprefix("cid:") if item.get("ContentID") else None,
            )
        )
    return tuple(attachments)


def _template(email: dict[str, Any], templated: bool) -> str | None:
    """The stored template a with-template email names (None for a plain /email one)."""
    if not templated:
        for key in TEMPLATE_KEYS:
            if email.get(key) is not None:
                raise EspError(
                    400, f"{key}: send templated email to /email/withTemplate", key, code=300
                )
        return None
    # The SDKs send both keys, the one not used as null.
    template = email.get("TemplateId")
    if template is None:
        template = email.get("TemplateAlias")
    if not isinstance(template, int | str) or isinstance(template, bool) or template == "":
        raise EspError(400, "TemplateId or TemplateAlias is required", "TemplateId", code=1101)
    if not isinstance(email.get("TemplateModel") or {}, dict):
        raise EspError(400, "TemplateModel must be an object", "TemplateModel", code=300)
    return str(template)


def parse(email: Any, where: str = "", *, templated: bool = False) -> Outgoing:
    """The message of one Postmark email object (of /email/withTemplate when `templated`)."""
    if not isinstance(email, dict):
        raise EspError(400, f"{where}the email must be a JSON object", where or None, code=402)
    template = _template(email, templated)
    sender = _text(email, "From")
    if not sender:
        raise EspError(400, "Invalid 'From' address: it is required", "From", code=300)
    try:
        check_addresses([sender], "From")
    except EspError as exc:
        raise EspError(400, f"Invalid 'From' address: {exc}", "From", code=300) from None
    to, cc, bcc = _list(email, "To"), _list(email, "Cc"), _list(email, "Bcc")
    if not (to or cc or bcc):
        raise EspError(400, "Zero recipients specified", "To", code=300)
    text, html = _text(email, "TextBody"), _text(email, "HtmlBody")
    if template is not None:
        text = template_text("Postmark", template, email.get("TemplateModel") or {})
        html = None
    if text is None and html is None:
        raise EspError(
            400, "Provide either email TextBody or HtmlBody or both.", "TextBody", code=300
        )
    headers, attachments = _headers(email), _attachments(email)
    metadata = email.get("Metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise EspError(400, "Metadata must be an object", "Metadata", code=300)
    if not isinstance(metadata.get("campaign", ""), str):
        raise EspError(400, "Metadata.campaign must be a string", "Metadata.campaign", code=300)
    fields = sendguard_fields(metadata, "Metadata")
    named = {h for h, _, _ in fields}
    if "X-Sendguard-Campaign" not in named:
        if metadata.get("campaign"):
            fields.append(("X-Sendguard-Campaign", str(metadata["campaign"]), "Metadata.campaign"))
        elif tag := _text(email, "Tag"):
            fields.append(("X-Sendguard-Campaign", tag, "Tag"))
    reply_to = _list(email, "ReplyTo")
    return Outgoing(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=_text(email, "Subject") or "",
        text=text,
        html=html,
        reply_to=reply_to,
        headers=headers,
        attachments=attachments,
        fields=tuple(fields),
        original=EspRequest("postmark", json.dumps(email, ensure_ascii=False).encode(), template),
        template_field="TemplateAlias" if email.get("TemplateId") is None else "TemplateId",
    )


def _result(outcome: Accepted | EspError, to: str, now: str) -> dict[str, Any]:
    if isinstance(outcome, EspError):
        return {"ErrorCode": outcome.code or 300, "Message": str(outcome)}
    return {
        "To": to,
        "SubmittedAt": now,
        "MessageID": outcome.message.id,
        "ErrorCode": 0,
        "Message": "OK",
    }


async def _who(request: web.Request) -> Any:
    return authenticate(request, request.headers.get("X-Postmark-Server-Token"))


async def _body(request: web.Request) -> Any:
    try:
        return parse_json(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise EspError(400, "Invalid JSON", None, code=402) from None


async def send_email(request: web.Request) -> web.Response:
    """One email."""
    return await _one(request, templated=False)


async def send_with_template(request: web.Request) -> web.Response:
    """One email rendered by Postmark from a stored template (passed through to Postmark)."""
    return await _one(request, templated=True)


async def _one(request: web.Request, *, templated: bool) -> web.Response:
    who = await _who(request)
    email = parse(await _body(request), templated=templated)
    now = api(request).clock.now().isoformat()

    def answer(outcomes: Sequence[Accepted | EspError]) -> bytes:
        (outcome,) = outcomes
        if isinstance(outcome, EspError):
            raise outcome
        return json.dumps(_result(outcome, ", ".join(email.to), now)).encode()

    body = await submit(request, who, Submission("postmark", [email], answer))
    return web.Response(body=body, content_type="application/json")


async def send_batch(request: web.Request) -> web.Response:
    """Up to 500 emails, answered one result each, in order."""
    return await _batch(request, templated=False)


async def send_batch_with_templates(request: web.Request) -> web.Response:
    """Up to 500 templated emails (`{"Messages": [...]}`), answered one result each."""
    return await _batch(request, templated=True)


async def _batch(request: web.Request, *, templated: bool) -> web.Response:
    who = await _who(request)
    data = await _body(request)
    if templated:
        if not isinstance(data, dict) or not isinstance(data.get("Messages"), list):
            raise EspError(400, 'The body must be {"Messages": [...]}', "Messages", code=402)
        data = data["Messages"]
    if not isinstance(data, list):
        raise EspError(
            400,
            'The batch must be a JSON array of emails: [{"From": ..., "To": ...}, ...];'
            " send one email object to /email",
            None,
            code=402,
        )
    if len(data) > MAX_BATCH:
        raise EspError(400, f"Too many batch messages (at most {MAX_BATCH})", None, code=410)
    parsed: list[Outgoing | EspError] = []
    for index, item in enumerate(data):
        try:
            parsed.append(parse(item, f"[{index}].", templated=templated))
        except EspError as exc:
            parsed.append(exc)
    valid = [p for p in parsed if isinstance(p, Outgoing)]
    now = api(request).clock.now().isoformat()

    def answer(outcomes: Sequence[Accepted | EspError]) -> bytes:
        results = iter(outcomes)
        out = []
        for item in parsed:
            if isinstance(item, EspError):
                out.append(_result(item, "", now))
            else:
                out.append(_result(next(results), ", ".join(item.to), now))
        return json.dumps(out).encode()

    body = await submit(request, who, Submission("postmark", valid, answer))
    return web.Response(body=body, content_type="application/json")
