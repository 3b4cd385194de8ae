"""Request bodies of the HTTP API: pydantic models, and errors that name the field."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from sendguard.fields import FIELDS, FieldOverrides, overrides_from
from sendguard.validation import Strict, allowed_names, field_path, problems

M = TypeVar("M", bound=BaseModel)
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")


def parse_json(text: bytes | str) -> Any:
    """`json.loads`, where nesting too deep to parse is a ValueError like any other bad JSON.

    Every JSON body is read through here: `[[[[…]]]]` a hundred thousand deep makes the
    parser raise RecursionError, which no handler expects from bad input.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def is_single_line(value: str) -> bool:
    """False for text that would break out of the header it is put in."""
    return not any(c in value for c in _FORBIDDEN_IN_HEADERS)


class BadRequest(Exception):
    """A 400 answer naming the field at fault."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid") -> None:
        self.field = field
        self.code = code
        super().__init__(message)


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request body validated against `model`; BadRequest names the first bad field.

    An empty body means `{}` (`curl -XPOST .../pause` sends none, with or without a
    Content-Type): it is enough where every field is optional, and otherwise the answer names
    the first required field. A body that is present must be JSON.
    """
    body = await request.read()
    try:
        data: Any = parse_json(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the body is not valid JSON ({exc}); send a JSON object"
            " (or, to /v1/messages, a message with Content-Type: message/rfc822)",
            "body",
            code="invalid_json",
        ) from None
    return validate_as(model, data)


class SendEnvelope(Strict):
    """`POST /v1/messages` as JSON: the message itself. Its sendguard fields (`campaign`,
    `class`, ...) are added from `sendguard.fields.FIELDS` to make `SendPayload`."""

    from_: str = Field(alias="from", min_length=1, max_length=320)
    to: list[str] = Field(default_factory=list, max_length=1000)
    cc: list[str] = Field(default_factory=list, max_length=1000)
    bcc: list[str] = Field(default_factory=list, max_length=1000)
    subject: str = Field(default="", max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("subject")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if any(c in value for c in _FORBIDDEN_IN_HEADERS):
            raise ValueError("must be a single line (no CR, LF or NUL)")
        return value

    @field_validator("headers")
    @classmethod
    def _header_safe(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if (
                not name
                or any(c in name for c in ": \t")
                or not name.isascii()
                or any(c in name for c in _FORBIDDEN_IN_HEADERS)
            ):
                raise ValueError(f"{name!r} is not a header name")
            if any(c in value for c in _FORBIDDEN_IN_HEADERS):
                raise ValueError(f"the value of {name} must be a single line")
        return headers


def _field_definitions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in FIELDS:
        alias = spec.key or None
        if spec.many:
            premises: Any = Field(default_factory=list, max_length=100, alias=alias)
            out[spec.name] = (spec.payload_type, premises)
        else:
            out[spec.name] = (spec.payload_type | None, Field(default=None, alias=alias))
    return out


if TYPE_CHECKING:
    SendPayload = SendEnvelope
else:
    SendPayload = create_model(
        "SendPayload",
        __base__=SendEnvelope,
        __doc__="`POST /v1/messages` as JSON: the message and its sendguard fields.",
        **_field_definitions(),
    )


def field_overrides(payload: SendEnvelope) -> FieldOverrides:
    """The sendguard fields a send payload gives, parsed (errors name the JSON field)."""
    return overrides_from({spec.json_name: getattr(payload, spec.name) for spec in FIELDS})


class ReviewPayload(Strict):
    """Approve or reject: why. The reviewer is the authenticated identity; a `reviewer` given
    here (say, the person a script acts for) is kept as part of the note."""

    reviewer: str | None = Field(default=None, min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)


class CampaignApprovalPayload(ReviewPayload):
    """Approve a campaign; `release: all` lifts every hold reason of its held deliveries."""

    release: Literal["all"] | None = None


class FactPayload(Strict):
    """`POST /v1/facts`."""

    key: str = Field(min_length=1, max_length=500)
    value: str = Field(max_length=2000)
    contact: str | None = Field(default=None, min_length=1, max_length=320)
    observed_at: str | None = None
    superseded_by: str | None = Field(default=None, min_length=1, max_length=500)


class EventPayload(Strict):
    """`POST /v1/events` (one item of a batch). `type` is checked against the built-in types
    and the custom ones configured policies read, at the handler."""

    type: str = Field(min_length=1, max_length=64)
    recipient: str = Field(min_length=1, max_length=320)
    message_id: str | None = Field(default=None, max_length=200)
    offer: str | None = Field(default=None, min_length=1, max_length=200)
    at: str | None = None
    bounce_type: Literal["hard", "soft"] | None = None

    @model_validator(mode="after")
    def _bounce_type(self) -> EventPayload:
        if self.bounce_type is not None and self.type != "bounce":
            raise ValueError("bounce_type: only a bounce has a bounce_type")
        return self


MAX_EVENTS = 1000


def validate_as(model: type[M], data: Any, prefix: str = "") -> M:
    """`data` validated against `model`; BadRequest names the field under `prefix` (`[3]`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = problems(exc, allowed_names(model), noun="field")[0]
        field = field_path(first.loc, prefix)
        message = first.message
        if message.startswith("bounce_type: "):
            field, message = f"{prefix}.bounce_type" if prefix else "bounce_type", message[13:]
        raise BadRequest(f"{field}: {message}" if field else message, field or None) from None


async def read_events(request: web.Request) -> tuple[list[EventPayload], bool]:
    """The events of `POST /v1/events` and whether they came as a batch (a JSON array)."""
    try:
        data: Any = parse_json(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the body is not valid JSON ({exc}); send an event object or an array of them",
            "body",
            code="invalid_json",
        ) from None
    if not isinstance(data, list):
        return [validate_as(EventPayload, data)], False
    if not 0 < len(data) <= MAX_EVENTS:
        raise BadRequest(f"body: send between 1 and {MAX_EVENTS} events in a batch", "body")
    return [validate_as(EventPayload, item, f"[{i}]") for i, item in enumerate(data)], True


class SuppressionPayload(Strict):
    """`POST /v1/suppressions` as JSON: suppress one address."""

    address: str = Field(min_length=1, max_length=320)
    reason: Literal["unsubscribe", "complaint", "bounce", "manual"] = "manual"
    reviewer: str | None = Field(default=None, min_length=1, max_length=200)
    """For whom the caller acts; kept in the note (the actor is the authenticated identity)."""
    note: str = Field(default="", max_length=2000)
