"""Pass-through: an ESP request as its client wrote it, narrowed to one delivery.

The ingress kept the message's part of the request (`sendguard.esp_request.EspRequest`); here it
becomes the request that leaves for that delivery: the template, its data, tracking settings,
categories/tags, custom args and attachments stay as they were; the recipients become the
delivery's one recipient (a Cc or Bcc recipient is addressed in To, as in rendered mode through
an ESP upstream); `sendguard_*` keys and `X-Sendguard-*` headers are removed (they were for
sendguard); the schedule (`send_at`, `o:deliverytime`) is removed, since sendguard already waited
for it; and `sendguard_delivery_id` is added, so the ESP's webhooks can be tied to the delivery.
"""

from __future__ import annotations

import base64
import email.utils
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sendguard.address import recipient_key
from sendguard.delivery.upstream import Envelope
from sendguard.headers import SENDGUARD_PREFIX, strip_unforwarded_headers

DELIVERY_ID = "sendguard_delivery_id"


def _same(entry: str, recipient: str) -> bool:
    return recipient_key(email.utils.parseaddr(entry)[1]) == recipient_key(recipient)


def _own_args(values: Any) -> dict[str, Any]:
    """A custom args / Metadata map without the keys that were meant for sendguard."""
    if not isinstance(values, Mapping):
        return {}
    return {k: v for k, v in values.items() if not str(k).startswith("sendguard_")}


def _is_sendguard_header(name: object) -> bool:
    return str(name).lower().encode().startswith(SENDGUARD_PREFIX)


def _own_headers(values: Any) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        return {}
    return {k: v for k, v in values.items() if not _is_sendguard_header(k)}


def sendgrid(request: bytes, envelope: Envelope) -> dict[str, Any]:
    """The mail/send body for `envelope.recipient` from the request's one personalization."""
    body: dict[str, Any] = json.loads(request)
    (person,) = body["personalizations"]
    entries = [
        e for kind in ("to", "cc", "bcc") for e in person.get(kind) or [] if isinstance(e, dict)
    ]
    own = next(
        (e for e in entries if _same(str(e.get("email", "")), envelope.recipient)),
        {"email": envelope.recipient},
    )
    narrowed = {k: v for k, v in person.items() if k not in ("to", "cc", "bcc", "send_at")}
    narrowed["to"] = [own]
    narrowed["custom_args"] = {
        **_own_args(person.get("custom_args")),
        DELIVERY_ID: envelope.delivery_id,
    }
    if "headers" in narrowed:
        narrowed["headers"] = _own_headers(narrowed["headers"])
    out = {k: v for k, v in body.items() if k != "send_at"}
    out["personalizations"] = [narrowed]
    if "custom_args" in out:
        out["custom_args"] = _own_args(out["custom_args"])
    if "headers" in out:
        out["headers"] = _own_headers(out["headers"])
    for key in ("custom_args", "headers"):
        if not out.get(key, True):
            del out[key]
    return out


def _entries(value: Any) -> list[str]:
    return [p.strip() for p in str(value or "").split(",") if p.strip()]


def postmark(
    request: bytes, envelope: Envelope, message_stream: str | None
) -> tuple[str, dict[str, Any]]:
    """The path (`/email` or `/email/withTemplate`) and body for `envelope.recipient`."""
    email_object: dict[str, Any] = json.loads(request)
    entries = [e for key in ("To", "Cc", "Bcc") for e in _entries(email_object.get(key))]
    own = next((e for e in entries if _same(e, envelope.recipient)), envelope.recipient)
    out = {k: v for k, v in email_object.items() if k not in ("To", "Cc", "Bcc")}
    out["To"] = own
    out["Metadata"] = {**_own_args(out.get("Metadata")), DELIVERY_ID: envelope.delivery_id}
    if isinstance(out.get("Headers"), list):
        out["Headers"] = [
            h
            for h in out["Headers"]
            if not (isinstance(h, dict) and _is_sendguard_header(h.get("Name")))
        ]
    if message_stream and not out.get("MessageStream"):
        out["MessageStream"] = message_stream
    templated = out.get("TemplateId") is not None or out.get("TemplateAlias") is not None
    return ("/email/withTemplate" if templated else "/email"), out


@dataclass(frozen=True)
class MailgunFile:
    """A file part of a Mailgun request."""

    name: str
    """`attachment`, `inline` or `message` (messages.mime)."""
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class MailgunForm:
    """A Mailgun request: its endpoint, fields (repeatable) and files."""

    mime: bool
    fields: tuple[tuple[str, str], ...]
    files: tuple[MailgunFile, ...]


def dump_mailgun(
    fields: Iterable[tuple[str, str]], files: Iterable[MailgunFile], *, mime: bool
) -> bytes:
    """The stored form of a Mailgun request (see `sendguard.esp_request.EspRequest`)."""
    return json.dumps(
        {
            "mime": mime,
            "fields": [list(f) for f in fields],
            "files": [
                {
                    "name": f.name,
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "content": base64.b64encode(f.content).decode(),
                }
                for f in files
            ],
        },
        ensure_ascii=False,
    ).encode()


_UNFORWARDED = frozenset({"to", "cc", "bcc", "o:deliverytime"})


def _own_variables(text: str, entry: str) -> str:
    """`recipient-variables` with only the recipient's own entry (nobody sees the others')."""
    address = email.utils.parseaddr(entry)[1]
    try:
        variables = json.loads(text)
    except ValueError:
        variables = {}
    mine = None
    if isinstance(variables, dict):
        mine = next((v for k, v in variables.items() if _same(str(k), address)), None)
    return json.dumps({address: mine if isinstance(mine, dict) else {}}, ensure_ascii=False)


def mailgun(request: bytes, envelope: Envelope) -> MailgunForm:
    """The messages (or messages.mime) form for `envelope.recipient`."""
    data = json.loads(request)
    fields = [(str(k), str(v)) for k, v in data["fields"]]
    entries = [
        f"{n} <{a}>" if n else a
        for k, v in fields
        if k in ("to", "cc", "bcc")
        for n, a in email.utils.getaddresses([v])
        if a
    ]
    own = next((e for e in entries if _same(e, envelope.recipient)), envelope.recipient)
    kept: list[tuple[str, str]] = [("to", own)]
    for name, value in fields:
        if name in _UNFORWARDED or name.startswith("v:sendguard_"):
            continue
        if name.startswith("h:") and _is_sendguard_header(name[2:]):
            continue
        if name == "recipient-variables":
            kept.append((name, _own_variables(value, own)))
            continue
        kept.append((name, value))
    kept.append((f"v:{DELIVERY_ID}", envelope.delivery_id))
    files = []
    for item in data["files"]:
        content = base64.b64decode(item["content"])
        if item["name"] == "message":  # messages.mime: the client's MIME, minus sendguard's headers
            content = strip_unforwarded_headers(content)
        files.append(MailgunFile(item["name"], item["filename"], item["content_type"], content))
    return MailgunForm(bool(data.get("mime")), tuple(kept), tuple(files))
