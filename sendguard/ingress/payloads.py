"""Request bodies of the HTTP API: pydantic models, and errors that name the field."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from sendguard.address import ADDRESS_PATTERN, validate_address
from sendguard.errors import InvalidAddress
from sendguard.events import EventType
from sendguard.fields import (
    FACT_KEY_PATTERN,
    FACT_VALUE_PATTERN,
    FIELDS,
    FieldOverrides,
    overrides_from,
)
from sendguard.validation import Strict, allowed_names, field_path, problems

M = TypeVar("M", bound=BaseModel)
ADDRESS_SCHEMA = {"type": "string", "format": "email", "pattern": ADDRESS_PATTERN}
Address = Annotated[str, Field(json_schema_extra={"format": "email", "pattern": ADDRESS_PATTERN})]
"""An address (`format: email` in the OpenAPI document; the handler checks it and names the
field, internationalised addresses included)."""
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_NAME = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-][A-Za-z0-9!#$%&'*+/^_`{|}~. -]{0,39}"
MAILBOX_PATTERN = (
    rf'^(?:(?:{_NAME})?|"[ !#-;@-\[\]-~]{{0,40}}") ?<'
    rf"{_ATEXT}{{1,16}}(?:\.{_ATEXT}{{1,15}}){{0,2}}"
    r"@(?:[A-Za-z0-9]{1,20}\.){1,4}[A-Za-z]{2,3}>$"
)
"""A mailbox with a display name as a JSON-schema pattern: a plain ASCII name that starts
with a word (or a quoted one) and a plain ASCII address of bounded parts under a top-level
domain of two or three letters (so never a special-use one: `.test`, `.local`, ...). No
look-ahead, so a client generating from the OpenAPI document (schemathesis) makes its examples
without filtering them. The handler (sendguard.ingress.mailboxes) takes more: non-ASCII names
and addresses, RFC 2047 words, any valid address; what the pattern matches it always takes
(tests/unit/test_mailboxes.py)."""
Mailbox = Annotated[
    str,
    Field(
        json_schema_extra={
            "anyOf": [
                {"format": "email", "pattern": ADDRESS_PATTERN},
                {"pattern": MAILBOX_PATTERN},
            ]
        }
    ),
]
"""An address, or a mailbox with a display name (`Shop <shop@example.com>`): see
sendguard/ingress/mailboxes.py, which checks it and names the field."""
FORBIDDEN_IN_HEADERS = tuple("\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
"""What no header value may contain: NUL, and every line break (`str.splitlines`'s, which the
email package refuses in a header)."""
SINGLE_LINE_PATTERN = "^[^" + "".join(f"\\u{ord(c):04x}" for c in FORBIDDEN_IN_HEADERS) + "]*$"
"""A header value's text as a JSON-schema pattern."""
HEADER_NAME_PATTERN = "^[!-9;-~]+$"
"""A header name: printable ASCII without colon or space (RFC 5322 field-name)."""


_DIGITS_AS_ZERO = bytes(ord("0") if ord("0") <= b <= ord("9") else ord(" ") for b in range(256))
_ORJSON_DIFFERS = b"0" * 19
"""Where orjson reads JSON otherwise than the json module: an integer outside 64 bits (a
float for orjson). Bodies with a run of 19 ASCII digits or more are read by the json module
alone; the run is looked for in the body with every digit made `0` (`bytes.translate`): a
third of the time a regular expression took to try every byte."""


def orjson_may_differ(raw: bytes) -> bool:
    """Whether `raw` has a run of 19 ASCII digits or more (what `re.search(rb"\\d{19}")`
    finds), where orjson may read a number otherwise than the json module."""
    return _ORJSON_DIFFERS in raw.translate(_DIGITS_AS_ZERO)


def parse_json(text: bytes | str) -> Any:
    """`json.loads`, where nesting too deep to parse is a ValueError like any other bad JSON.

    Every JSON body is read through here: `[[[[…]]]]` a hundred thousand deep makes the
    parser raise RecursionError, which no handler expects from bad input.

    orjson reads it first (several times faster); what orjson refuses, the json module reads
    as before: the same values (NaN, integers past 64 bits, lone surrogates, UTF-16 bodies)
    and the same error messages for bad JSON (tests/unit/test_parse_json.py).
    """
    if not orjson_may_differ(text if isinstance(text, bytes) else text.encode()):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def is_single_line(value: str) -> bool:
    """False for text that would break out of the header it is put in.

    Every character of FORBIDDEN_IN_HEADERS is unprintable (`str.isprintable`), so printable
    text is one C call; only the rest (a tab, say) is searched character by character: a
    subject checked that way cost some 7,800 instructions, the generator's setup and eleven
    searches, in every send."""
    return value.isprintable() or not any(c in value for c in FORBIDDEN_IN_HEADERS)


class BadRequest(Exception):
    """A 400 answer naming the field at fault."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid") -> None:
        self.field = field
        self.code = code
        super().__init__(message)


def address_in(value: str, field: str) -> str:
    """`value` as a valid address; BadRequest names `field` (a JSON path, query parameter or
    path segment) and what is wrong."""
    try:
        return validate_address(value)
    except InvalidAddress as exc:
        raise BadRequest(f"{field}: {exc}", field) from None


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request body validated against `model`; BadRequest names the first bad field.

    An empty body means `{}` (`curl -XPOST .../pause` sends none, with or without a
    Content-Type): it is enough where every field is optional, and otherwise the answer names
    the first required field. A body that is present must be JSON.
    """
    return validate_as(model, body_data(await request.read()))


def body_data(body: bytes) -> Any:
    """A request body read as JSON (none: `{}`); BadRequest if it is not JSON."""
    try:
        return parse_json(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the body is not valid JSON ({exc}); send a JSON object"
            " (or, to /v1/messages, a message with Content-Type: message/rfc822)",
            "body",
            code="invalid_json",
        ) from None


MAX_HEADER = 998
"""The longest `from` and `subject` (RFC 5322's line)."""
MAX_RECIPIENTS = 1000
"""The most addresses in each of `to`, `cc` and `bcc`."""


class SendEnvelope(Strict):
    """`POST /v1/messages` as JSON: the message itself. Its sendguard fields (`campaign`,
    `class`, ...) are added from `sendguard.fields.FIELDS` to make `SendPayload`."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"minItems": 1}}}
                for name in ("to", "cc", "bcc")
            ]
        }
    )

    from_: Mailbox = Field(alias="from", max_length=MAX_HEADER)
    to: list[Mailbox] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    cc: list[Mailbox] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Mailbox] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: str = Field(
        default="", max_length=MAX_HEADER, json_schema_extra={"pattern": SINGLE_LINE_PATTERN}
    )
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={
            "propertyNames": {"pattern": HEADER_NAME_PATTERN},
            "additionalProperties": {"type": "string", "pattern": SINGLE_LINE_PATTERN},
        },
    )

    @field_validator("to", "cc", "bcc", mode="before")
    @classmethod
    def _a_list(cls, value: Any, info: ValidationInfo) -> Any:
        # `"to": "ann@example.org"` is the likeliest mistake; pydantic's `Input should be a
        # valid list` does not say what to write instead.
        if isinstance(value, str):
            example = json.dumps({info.field_name: [value[:200]]})[1:-1]
            # pydantic turns a ValueError, not a TypeError, into a validation error.
            raise ValueError(f"must be a list of addresses, even of one: {example}")  # noqa: TRY004
        return value

    @field_validator("subject")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if not is_single_line(value):
            raise ValueError("must be a single line (no CR, LF or NUL)")
        return value

    @field_validator("headers")
    @classmethod
    def _header_safe(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not re.fullmatch(HEADER_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a header name")
            if not is_single_line(value):
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


_PAYLOAD_FIELDS = tuple((spec.name, spec.json_name) for spec in FIELDS)
"""The sendguard fields of SendPayload (made from FIELDS when it was): attribute, JSON name."""


def field_overrides(payload: SendEnvelope) -> FieldOverrides:
    """The sendguard fields a send payload gives, parsed (errors name the JSON field).

    Only the fields the payload set are looked at: one not given is its default (None or
    an empty list), which `overrides_from` takes as not given anyway.

    The overrides of the last few distinct sets of values are kept (`_recent_overrides`):
    a campaign's sends give the same fields, one request per person, and parsing them
    again (a `SendguardFields` and a `FieldOverrides` made and checked) cost some 59,000
    instructions a send, reading them with a look-up 11,000. What is kept is immutable
    (frozen records of strings, times and tuples), so sends share it safely; values that
    are refused are not kept (each send is told again)."""
    return overrides_of(given_fields(payload))


def given_fields(payload: SendEnvelope) -> dict[str, Any]:
    """The sendguard fields `payload` set, by JSON name, as given."""
    given = payload.model_fields_set
    return {
        json_name: getattr(payload, name) for name, json_name in _PAYLOAD_FIELDS if name in given
    }


def overrides_of(values: dict[str, Any]) -> FieldOverrides:
    """`overrides_from(values)`, kept for the last few distinct `values` (see
    `field_overrides`)."""
    key = _overrides_key(values)
    if key is None:
        return overrides_from(values)
    found = _recent_overrides.get(key)
    if found is None:
        found = _recent_overrides[key] = overrides_from(values)
        if len(_recent_overrides) > _RECENT_OVERRIDES:
            # the oldest (a send on another thread may pop too)
            _recent_overrides.pop(next(iter(_recent_overrides), key), None)
    return found


def _overrides_key(values: dict[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """`values` as a key of `_recent_overrides`, if each is None, a string or a list of
    strings (every built-in field's JSON type); else None (a field added with another type:
    `1` and `True` would be one key)."""
    key = []
    for name, value in values.items():
        if type(value) is list:
            if not all(type(item) is str for item in value):
                return None
            value = tuple(value)  # noqa: PLW2901 - the key's form of it
        elif value is not None and type(value) is not str:
            return None
        key.append((name, value))
    return tuple(key)


_RECENT_OVERRIDES = 256
_recent_overrides: dict[tuple[tuple[str, Any], ...], FieldOverrides] = {}


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

    key: str = Field(min_length=1, max_length=500, json_schema_extra={"pattern": FACT_KEY_PATTERN})
    value: str = Field(max_length=2000, json_schema_extra={"pattern": FACT_VALUE_PATTERN})
    contact: Address | None = Field(default=None, min_length=1, max_length=320)
    observed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    superseded_by: str | None = Field(
        default=None, min_length=1, max_length=500, json_schema_extra={"pattern": FACT_KEY_PATTERN}
    )


class EventPayload(Strict):
    """`POST /v1/events` (one item of a batch). `type` is checked against the built-in types
    and the custom ones configured policies read, at the handler."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"bounce_type": {"type": "string"}}, "required": ["bounce_type"]},
            "then": {"properties": {"type": {"const": "bounce"}}},
        }
    )

    type: str = Field(
        min_length=1,
        max_length=64,
        description="A built-in type, or a custom one a configured policy reads.",
        json_schema_extra={"enum": [t.value for t in EventType]},
    )
    recipient: Address = Field(min_length=1, max_length=320)
    message_id: str | None = Field(default=None, max_length=200)
    offer: str | None = Field(default=None, min_length=1, max_length=200)
    at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
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

    address: Address = Field(min_length=1, max_length=320)
    reason: Literal["unsubscribe", "complaint", "bounce", "manual"] = "manual"
    reviewer: str | None = Field(default=None, min_length=1, max_length=200)
    """For whom the caller acts; kept in the note (the actor is the authenticated identity)."""
    note: str = Field(default="", max_length=2000)
