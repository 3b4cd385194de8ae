"""The request bodies the ESP-compatible routes read, as JSON schemas for the OpenAPI document.

These are the ESPs' own shapes (their documentation is the reference), narrowed to the keys
sendguard reads; other keys are accepted and ignored, as the ESPs ignore what they do not
know. Template sends are refused (stored templates are not rendered here), so the template
keys are documented as absent.
"""

from __future__ import annotations

from typing import Any

from sendguard.ingress.esp.postmark import MAX_BATCH
from sendguard.ingress.payloads import ADDRESS_SCHEMA, SINGLE_LINE_PATTERN

_EMAIL = ADDRESS_SCHEMA
_EMAIL_OR_NONE = {"anyOf": [ADDRESS_SCHEMA, {"const": ""}]}
_TEXT = {"type": "string"}
_LINE = {"type": "string", "pattern": SINGLE_LINE_PATTERN}
_LINE_OR_NULL = {"type": ["string", "null"], "pattern": SINGLE_LINE_PATTERN}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_SENDGUARD_NOTE = (
    " `sendguard_<field>` keys (like sendguard_campaign) set sendguard's fields; no other"
    " key may start with sendguard_."
)
_ARGS = {
    "type": ["object", "null"],
    "propertyNames": {"not": {"pattern": "^sendguard_"}},
    "properties": {"campaign": _LINE},
    "additionalProperties": _TEXT,
}
_METADATA = {
    "type": ["object", "null"],
    "propertyNames": {"not": {"pattern": "^sendguard_"}},
    "properties": {"campaign": _LINE},
}

_SENDGRID_ADDRESS = {
    "type": "object",
    # A name that is not a string is ignored; a string one goes into the header: one line.
    "properties": {"email": _EMAIL, "name": {"anyOf": [_LINE, {"not": {"type": "string"}}]}},
    "required": ["email"],
}
_SENDGRID_BCC = {  # envelope only: the name goes nowhere
    "type": "object",
    "properties": {"email": _EMAIL},
    "required": ["email"],
}
SENDGRID_MAIL: dict[str, Any] = {
    "type": "object",
    "description": "SendGrid v3 mail/send." + _SENDGUARD_NOTE,
    "properties": {
        "from": _SENDGRID_ADDRESS,
        "subject": {**_LINE, "minLength": 1},
        "personalizations": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "properties": {
                    "to": {"type": "array", "minItems": 1, "items": _SENDGRID_ADDRESS},
                    "cc": {"type": ["array", "null"], "items": _SENDGRID_ADDRESS},
                    "bcc": {"type": ["array", "null"], "items": _SENDGRID_BCC},
                    "custom_args": _ARGS,
                },
                "required": ["to"],
            },
        },
        "content": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"type": {"enum": ["text/plain", "text/html"]}, "value": _TEXT},
                "required": ["type", "value"],
            },
        },
        "custom_args": _ARGS,
        "categories": {"type": ["array", "null"], "items": _TEXT},
        "template_id": False,
    },
    "required": ["from", "subject", "personalizations", "content"],
}

POSTMARK_EMAIL: dict[str, Any] = {
    "type": "object",
    "description": "A Postmark email; To, Cc and Bcc are comma-separated addresses."
    + _SENDGUARD_NOTE,
    "properties": {
        "From": _EMAIL,
        "To": _EMAIL,
        "Cc": {"anyOf": [_EMAIL, {"type": "null"}, {"const": ""}]},
        "Bcc": {"anyOf": [_EMAIL, {"type": "null"}, {"const": ""}]},
        "Subject": _LINE_OR_NULL,
        "TextBody": _TEXT_OR_NULL,
        "HtmlBody": _TEXT_OR_NULL,
        "Tag": _LINE_OR_NULL,
        "Metadata": _METADATA,
        "TemplateId": False,
        "TemplateAlias": False,
        "TemplateModel": False,
    },
    "required": ["From", "To"],
    "anyOf": [
        {"required": [body], "properties": {body: _TEXT}} for body in ("TextBody", "HtmlBody")
    ],
}
POSTMARK_TEMPLATE_EMAIL: dict[str, Any] = {
    "type": "object",
    "description": "A Postmark email from a stored template (TemplateId or TemplateAlias, with"
    " TemplateModel): sent on as it came through a Postmark upstream; refused (422) where the"
    " route leads elsewhere, since sendguard cannot render Postmark's templates." + _SENDGUARD_NOTE,
    "properties": {
        "From": _EMAIL,
        "To": _EMAIL,
        "Cc": {"anyOf": [_EMAIL, {"type": "null"}, {"const": ""}]},
        "Bcc": {"anyOf": [_EMAIL, {"type": "null"}, {"const": ""}]},
        "TemplateId": {"type": "integer", "minimum": 1},
        "TemplateAlias": _LINE,
        "TemplateModel": {"type": "object"},
        "Tag": _LINE_OR_NULL,
        "Metadata": _METADATA,
    },
    "required": ["From", "To"],
    "anyOf": [{"required": ["TemplateId"]}, {"required": ["TemplateAlias"]}],
}
POSTMARK_TEMPLATE_BATCH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Messages": {
            "type": "array",
            "maxItems": MAX_BATCH,
            "description": "Each like /email/withTemplate's body; each is answered on its own"
            " (a bad one with its ErrorCode, the others sent).",
            "items": {},
        }
    },
    "required": ["Messages"],
}
POSTMARK_BATCH: dict[str, Any] = {
    "type": "array",
    "maxItems": MAX_BATCH,
    "description": "Up to 500 emails; each is answered on its own (a bad one with its"
    " ErrorCode, the others sent).",
    "items": {},
}

MAILGUN_MESSAGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "from": _EMAIL,
        "to": _EMAIL,
        "cc": _EMAIL_OR_NONE,
        "bcc": _EMAIL_OR_NONE,
        "subject": _LINE,
        "text": _TEXT,
        "html": _TEXT,
        "o:tag": _LINE,
    },
    "required": ["from", "to"],
    "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
}
MAILGUN_MIME: dict[str, Any] = {
    "type": "object",
    "properties": {
        "to": _EMAIL,
        "message": {
            "type": "string",
            "description": "The whole MIME message, with a From header.",
            "pattern": "^From: [A-Za-z0-9]+@[A-Za-z0-9]+\\.[A-Za-z]{2,}\r\n\r\n[ -~]*$",
        },
    },
    "required": ["to", "message"],
}
