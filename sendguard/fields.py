"""Sendguard's message fields, each described once: `FIELDS`.

A field (`campaign`, `class`, `requires`, ...) is one `Field` record: the headers it is read
from by default (a config's `headers:` section can name others, first match wins), how one
value is parsed, its JSON name in `POST /v1/messages`, how it is stored and how it is shown.
Everything else is derived from the table: the header reader (`read_fields`), the config's
header sources (`sendguard.config.models.HeadersOptions`), the JSON payload's fields and their
overrides (`sendguard.ingress.payloads.SendPayload`, `overrides_from`), the store's codec
(`dump_fields`/`load_fields`) and the JSON views (`show_fields`). Adding a field is adding a
record here; policies read it with `delivery.message.fields.get(FIELD)`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import pydantic
from pydantic import AfterValidator, BeforeValidator, StringConstraints

from sendguard.duration import PATTERN as DURATION_PATTERN
from sendguard.duration import format_duration, parse_duration
from sendguard.errors import InvalidMessage
from sendguard.headers import Headers
from sendguard.message import Match, MessageClass, OnTimeout, Requirement, SendguardFields

_LIST_ID = re.compile(r"<([^<>]+)>")


@dataclass(frozen=True)
class FieldOverrides:
    """Fields given beside the headers (the HTTP payload's `campaign`, `not_before`, ...):
    each one named in `given` replaces what the headers say, with its value from `values`."""

    values: SendguardFields = dataclasses.field(default_factory=SendguardFields)
    given: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.given - {f.name for f in FIELDS}
        if unknown:
            raise ValueError(f"not sendguard fields: {', '.join(sorted(unknown))}")

    def apply(self, fields: SendguardFields) -> SendguardFields:
        """`fields` with the given ones replaced."""
        if not self.given:
            return fields
        typed = {n: getattr(self.values, n) for n in self.given if n in _TYPED}
        others = {n: self.values.others[n] for n in self.given if n not in _TYPED}
        return dataclasses.replace(fields, **typed, others={**fields.others, **others})


def parse_time(value: str, *, field: str) -> datetime:
    """An RFC 3339 timestamp with an offset (or Z); raise InvalidMessage naming `field`."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidMessage(
            f"{field}: {value!r} is not an RFC 3339 time (like 2026-11-22T09:00:00Z)", field=field
        ) from None
    if parsed.tzinfo is None:
        raise InvalidMessage(f"{field}: {value!r} needs a UTC offset or Z", field=field)
    return parsed


MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a reported moment may lie (the reporter's clock may run ahead)."""


def parse_past_time(value: str, *, field: str, now: datetime) -> datetime:
    """When something was observed or happened: RFC 3339, and not in the future.

    A fact dated tomorrow would outrank every fact posted until then (the newest observation
    wins), so a later no-show could never undo a "completed" with a wrong clock. A moment a
    little ahead (a reporter's clock running fast) is taken as now, for the same reason.
    """
    at = parse_time(value, field=field)
    if at > now + MAX_CLOCK_SKEW:
        raise InvalidMessage(
            f"{field}: {value!r} is in the future; report when it was observed or happened"
            f" (clocks may differ by {MAX_CLOCK_SKEW.seconds // 60} minutes at most)",
            field=field,
        )
    return min(at, now)


# Python's \s, spelled out: JSON-schema (ECMA) patterns read \s as a smaller set.
_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_FACT_KEY = re.compile(rf"[^{_WS}=!,;|]+")
FACT_KEY_PATTERN = f"^{_FACT_KEY.pattern}$"
"""A fact key as a JSON-schema pattern (what `check_fact_key` accepts)."""
_FACT_VALUE = re.compile(rf"[^{_WS},;|](?:[^,;|]*[^{_WS},;|])?")
FACT_VALUE_PATTERN = f"^{_FACT_VALUE.pattern}$"
"""A fact value as a JSON-schema pattern (what `check_fact_value` accepts)."""


def check_fact_key(key: str, *, field: str) -> str:
    """A fact key as premises name it: no spaces and none of `= ! , ; |`."""
    if not _FACT_KEY.fullmatch(key):
        raise InvalidMessage(
            f"{field}: {key!r} cannot be named by a premise; use no spaces and none of = ! , ; |"
            " (like meeting:8812:status)",
            field=field,
        )
    return key


def check_fact_value(value: str, *, field: str) -> str:
    """A fact value a premise can match: not empty, none of `, ; |` (they separate premises,
    parameters and alternatives)."""
    if not _FACT_VALUE.fullmatch(value):
        raise InvalidMessage(
            f"{field}: {value!r} cannot be matched by a premise; use a non-empty value without"
            " , ; | or surrounding spaces",
            field=field,
        )
    return value


_PREMISE = re.compile(
    rf"(?P<key>[^{_WS}=!,;|]+)[{_WS}]*(?:(?P<op>!=|=)|[{_WS}](?P<in>in)[{_WS}])[{_WS}]*"
    r"(?P<values>.*)",
    re.DOTALL,
)
_PREMISE_FORM = (
    "must have the form key=value, key!=value or key in a|b,"
    " optionally followed by '; after=<RFC 3339 time>'"
)


def parse_requirement(text: str, *, field: str) -> Requirement:
    """One premise as written in X-Sendguard-Requires / -Unless.

    `key=value`, `key!=value`, `key in a|b` (also `key=a|b`), then optional `; after=<time>`.
    Commas already separate premises in one header and semicolons parameters, so `|` joins
    the values of one premise: it cannot be confused with either, and reads as "or".
    """
    premise, *params = text.split(";")
    found = _PREMISE.fullmatch(premise.strip())
    values = (
        [v.strip() for v in found.group("values").strip().strip("()").split("|")] if found else []
    )
    if found is None or not all(values):
        raise InvalidMessage(f"{field}: {text.strip()!r} {_PREMISE_FORM}", field=field)
    if found.group("in"):
        match = Match.ONE_OF
    elif found.group("op") == "!=":
        match = Match.NOT_EQUAL
    else:
        match = Match.ONE_OF if len(values) > 1 else Match.EQUAL
    after = None
    for param in params:
        name, eq, value = param.partition("=")
        if name.strip().lower() != "after" or not eq or after is not None:
            raise InvalidMessage(
                f"{field}: {param.strip()!r} in {text.strip()!r} is not a parameter;"
                " the only one is 'after=<RFC 3339 time>', once",
                field=field,
            )
        after = parse_time(value, field=field)
    return Requirement(found.group("key"), "|".join(values), match, after)


def parse_on_timeout(value: str, *, field: str) -> OnTimeout:
    """`hold`, `drop` or `forward` (X-Sendguard-On-Timeout)."""
    try:
        return OnTimeout(value.strip().lower())
    except ValueError:
        raise InvalidMessage(
            f"{field}: {value!r} is not an action; use hold, drop or forward", field=field
        ) from None


def check_timezone(name: str, *, field: str) -> str:
    """An IANA time zone name such as Europe/Berlin."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidMessage(
            f"{field}: {name!r} is not an IANA time zone (like Europe/Berlin)", field=field
        ) from None
    return name


def _parse_campaign(value: str, field: str) -> str:
    # List-Id says `Name <list.example.org>`: the id in brackets is what stays the same.
    match = _LIST_ID.search(value) if field.lower() == "list-id" else None
    return match.group(1).strip() if match else value


def _parse_class(value: str, field: str) -> MessageClass:
    try:
        return MessageClass(value.strip().lower())
    except ValueError:
        raise InvalidMessage(
            f"{field}: {value!r} is not a class; use transactional or marketing", field=field
        ) from None


def _parse_wait(value: str, field: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidMessage(f"{field}: {exc}", field=field) from None


def _dump_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _load_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _show_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _dump_requirements(value: tuple[Requirement, ...]) -> list[list[str | None]]:
    return [
        [r.key, r.value, r.match.value, r.after.isoformat() if r.after else None] for r in value
    ]


def _load_requirements(value: Any) -> tuple[Requirement, ...]:
    out = []
    for item in value or ():
        # Rows written before premises had operators hold only [key, value].
        key, text = str(item[0]), str(item[1])
        match = Match(item[2]) if len(item) > 2 and item[2] else Match.EQUAL
        after = datetime.fromisoformat(item[3]) if len(item) > 3 and item[3] else None
        out.append(Requirement(key, text, match, after))
    return tuple(out)


def _parse_premise(text: str, field: str) -> Requirement:
    return parse_requirement(text, field=field)


def _single_line(value: str) -> str:
    # CR, LF and NUL are unprintable: printable text (nearly all of it) is one C call.
    if not value.isprintable() and any(c in value for c in "\r\n\x00"):
        raise ValueError("must be a single line (no CR, LF or NUL)")
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_single_line),
    pydantic.Field(json_schema_extra={"pattern": "^[^\\r\\n\\u0000]*$"}),
]
"""A name given in JSON (a campaign, an offer): short, one line."""

# What the OpenAPI document says of the JSON form of the fields parsed from text (the parse
# functions check the same, and name the field when it is wrong).
# Each is one line too (AfterValidator): the value ends up in a header.
_TIME_JSON = Annotated[
    str,
    AfterValidator(_single_line),
    pydantic.Field(json_schema_extra={"format": "date-time"}),
]
_WAIT_JSON = Annotated[
    str,
    AfterValidator(_single_line),
    pydantic.Field(json_schema_extra={"pattern": DURATION_PATTERN}),
]
# A premise is one line too (AfterValidator): the pattern's blanks are those but CR and LF,
# and no part holds a NUL, so what it matches is never refused (schemathesis found one).
_RFC3339 = (
    r"[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
"""An RFC 3339 time as the pattern says it: days to the 28th, so every match is a real date
(the document may say less than the parser takes, never more)."""
_LINE_WS = _WS.replace(r"\n", "").replace(r"\r", "")
_VALUE_TEXT = rf"[^|;\r\n\x00]*[^{_WS}|;()\x00][^|;\r\n\x00]*"
PREMISE_PATTERN = (
    rf"^[{_LINE_WS}]*[^{_WS}=!,;|\x00]+[{_LINE_WS}]*(?:!=|=|[{_LINE_WS}]in[{_LINE_WS}])"
    rf"[{_LINE_WS}]*{_VALUE_TEXT}(?:\|{_VALUE_TEXT})*"
    rf"(?:;[{_LINE_WS}]*[aA][fF][tT][eE][rR][{_LINE_WS}]*=[{_LINE_WS}]*"
    rf"{_RFC3339}[{_LINE_WS}]*)?$"
)
"""A premise as `parse_requirement` reads it, on one line, as a JSON-schema pattern."""
_PREMISES_JSON = list[
    Annotated[
        str,
        AfterValidator(_single_line),
        pydantic.Field(json_schema_extra={"pattern": PREMISE_PATTERN}),
    ]
]


def _timezone_names(schema: dict[str, pydantic.JsonValue]) -> None:
    """The time zone database's names, read when the OpenAPI document is made (its first
    request): reading them at import opened ~600 files at every start."""
    zones: list[pydantic.JsonValue] = []
    zones.extend(sorted(available_timezones()))
    schema["enum"] = zones


def _timezone_json() -> Any:
    return Annotated[
        str, AfterValidator(_single_line), pydantic.Field(json_schema_extra=_timezone_names)
    ]


Line = Annotated[str, AfterValidator(_single_line)]
"""Any other field's JSON value: it ends up in a header, so one line (no header injection)."""


def _same(value: Any) -> Any:
    return value


T = TypeVar("T")


@dataclass(frozen=True)
class Field(Generic[T]):
    """One message field, described once.

    `parse(text, field)` turns one header or JSON value into the field's value (or, for a
    `many` field, into one item of it), raising InvalidMessage that names `field` (the header
    or the JSON path). `dump`/`load` give its JSON-able stored form and back; `show` its form
    in API answers (`dump` unless given).
    """

    name: str
    """The attribute of SendguardFields (or the key of its `others`)."""
    headers: tuple[str, ...]
    """Where it is read from by default, first match wins; the first is X-Sendguard-*."""
    parse: Callable[[str, str], Any]
    default: T
    key: str = ""
    """Its name in JSON, in stored rows and under `headers:` in the config (`name` if empty)."""
    many: bool = False
    """Repeatable: every value of the header, comma-separated; a JSON list of strings."""
    dump: Callable[[T], Any] = _same
    load: Callable[[Any], T] = _same
    show: Callable[[T], Any] | None = None
    json_type: Any = None
    """The JSON payload's type for it (`str`, or `list[str]` when `many`, if None)."""
    description: str = ""

    @property
    def json_name(self) -> str:
        """Its name in JSON payloads, answers and stored rows, and in the config."""
        return self.key or self.name

    @property
    def payload_type(self) -> Any:
        """What the JSON payload accepts for it."""
        return self.json_type if self.json_type is not None else (list[Line] if self.many else Line)

    def shown(self, value: T) -> Any:
        """Its value as API answers show it."""
        return (self.show or self.dump)(value)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _enum_values(enum: type[MessageClass] | type[OnTimeout]) -> Any:
    # Any case, as in the headers (`X-Sendguard-Class: Transactional`): JSON is the same field.
    return Annotated[Literal[tuple(e.value for e in enum)], BeforeValidator(_lower)]


CAMPAIGN: Field[str | None] = Field(
    "campaign",
    ("X-Sendguard-Campaign", "X-Campaign", "X-Mailgun-Tag", "List-Id"),
    _parse_campaign,
    None,
    json_type=Name,
    description="The campaign (a series, like a newsletter) the message belongs to.",
)
MESSAGE_CLASS: Field[MessageClass] = Field(
    "message_class",
    ("X-Sendguard-Class",),
    _parse_class,
    MessageClass.MARKETING,
    key="class",
    dump=lambda c: c.value,
    load=lambda v: MessageClass(v or MessageClass.MARKETING),
    json_type=_enum_values(MessageClass),
    description="transactional or marketing (the default; a bounce, ?from=<>, is transactional).",
)
REQUIRES: Field[tuple[Requirement, ...]] = Field(
    "requires",
    ("X-Sendguard-Requires",),
    _parse_premise,
    (),
    many=True,
    dump=_dump_requirements,
    load=_load_requirements,
    show=lambda rs: [str(r) for r in rs],
    description="Premises: facts that must hold (key=value, key!=value, key in a|b).",
    json_type=_PREMISES_JSON,
)
WAIT: Field[timedelta | None] = Field(
    "wait",
    ("X-Sendguard-Wait",),
    _parse_wait,
    None,
    dump=lambda w: format_duration(w) if w is not None else None,
    load=lambda v: parse_duration(v) if v else None,
    description="How long to wait for unsettled premises (like 24h).",
    json_type=_WAIT_JSON,
)
DATA_AS_OF: Field[datetime | None] = Field(
    "data_as_of",
    ("X-Sendguard-Data-As-Of",),
    lambda text, field: parse_time(text, field=field),
    None,
    dump=_dump_time,
    load=_load_time,
    show=_show_time,
    description="When the data the message was built from was read (RFC 3339).",
    json_type=_TIME_JSON,
)
TIMEZONE: Field[str | None] = Field(
    "timezone",
    ("X-Sendguard-Timezone",),
    lambda text, field: check_timezone(text, field=field),
    None,
    description="The recipient's IANA time zone (quiet hours).",
    json_type=_timezone_json(),
)
NOT_BEFORE: Field[datetime | None] = Field(
    "not_before",
    ("X-Sendguard-Not-Before",),
    lambda text, field: parse_time(text, field=field),
    None,
    dump=_dump_time,
    load=_load_time,
    show=_show_time,
    description="Send no earlier than this (RFC 3339).",
    json_type=_TIME_JSON,
)
OFFER: Field[str | None] = Field(
    "offer",
    ("X-Sendguard-Offer",),
    lambda text, field: text,
    None,
    json_type=Name,
    description="What the message offers: repetition counts it, a purchase ends it.",
)
UNLESS: Field[tuple[Requirement, ...]] = Field(
    "unless",
    ("X-Sendguard-Unless",),
    _parse_premise,
    (),
    many=True,
    dump=_dump_requirements,
    load=_load_requirements,
    show=lambda rs: [str(r) for r in rs],
    description="Negative premises: not sent while one of them is true.",
    json_type=_PREMISES_JSON,
)
ON_TIMEOUT: Field[OnTimeout | None] = Field(
    "on_timeout",
    ("X-Sendguard-On-Timeout",),
    lambda text, field: parse_on_timeout(text, field=field),
    None,
    dump=lambda o: o.value if o is not None else None,
    load=lambda v: OnTimeout(v) if v else None,
    json_type=_enum_values(OnTimeout),
    description="What the context policy does when the wait ends: hold, drop or forward.",
)

FIELDS: list[Field[Any]] = [
    CAMPAIGN,
    MESSAGE_CLASS,
    REQUIRES,
    WAIT,
    DATA_AS_OF,
    TIMEZONE,
    NOT_BEFORE,
    OFFER,
    UNLESS,
    ON_TIMEOUT,
]
"""Every message field, in the order they are shown. Append to add one."""

_TYPED = frozenset(f.name for f in dataclasses.fields(SendguardFields)) - {"others"}


NULL_SENDER_DEFAULTS = SendguardFields(message_class=MessageClass.TRANSACTIONAL)
"""The defaults of the fields of a message with the null sender `<>` (a bounce, a DSN):
transactional unless its headers or payload give a class. A DSN is an automatic notification
(RFC 3464); a marketing cap delaying the second bounce to one address by a day helps nobody."""


def default_sources() -> dict[str, tuple[str, ...]]:
    """Each field's JSON name to the headers it is read from by default."""
    return {f.json_name: f.headers for f in FIELDS}


DEFAULT_SOURCES: Mapping[str, Sequence[str]] = default_sources()
"""The built-in fields' default header sources (`default_sources()` sees added ones too)."""


def _build(values: Mapping[str, Any], defaults: SendguardFields | None = None) -> SendguardFields:
    typed = {k: v for k, v in values.items() if k in _TYPED}
    others = {k: v for k, v in values.items() if k not in _TYPED}
    if defaults is None:
        return SendguardFields(**typed, others=others)
    return dataclasses.replace(defaults, **typed, others={**defaults.others, **others})


def read_fields(
    headers: Headers,
    sources: Mapping[str, Sequence[str]],
    defaults: SendguardFields | None = None,
) -> SendguardFields:
    """Build SendguardFields from `headers`; malformed values raise InvalidMessage.

    `sources` maps a field's JSON name to the headers to read it from (first match wins);
    a field it does not name is read from its default headers. A field no header gives
    takes its value from `defaults` (each field's own default if None).
    """
    values: dict[str, Any] = {}
    for spec in FIELDS:
        for header in sources.get(spec.json_name, spec.headers):
            if spec.many:
                found = [v for v in headers.get_all(header) if v.strip()]
                if found:
                    values[spec.name] = tuple(
                        spec.parse(part, header)
                        for value in found
                        for part in value.split(",")
                        if part.strip()
                    )
                    break
            else:
                value = headers.get(header)
                if value is not None and value.strip():
                    values[spec.name] = spec.parse(value.strip(), header)
                    break
    return _build(values, defaults)


def overrides_from(given: Mapping[str, Any]) -> FieldOverrides:
    """The fields given in a JSON payload (by JSON name; None or [] means not given),
    parsed, errors naming the JSON field (`requires[1]`)."""
    values: dict[str, Any] = {}
    for spec in FIELDS:
        raw = given.get(spec.json_name)
        if raw is None or (spec.many and not raw):
            continue
        if spec.many:
            values[spec.name] = tuple(
                spec.parse(item, f"{spec.json_name}[{i}]") for i, item in enumerate(raw)
            )
        else:
            values[spec.name] = spec.parse(raw, spec.json_name)
    return FieldOverrides(_build(values), frozenset(values))


def dump_fields(fields: SendguardFields) -> dict[str, Any]:
    """Every field in its stored, JSON-able form, by JSON name."""
    return {spec.json_name: spec.dump(fields.get(spec)) for spec in FIELDS}


def load_fields(data: Mapping[str, Any]) -> SendguardFields:
    """The inverse of `dump_fields`; a field missing from `data` (stored before it was
    added) takes its default."""
    return _build(
        {
            spec.name: spec.load(data[spec.json_name]) if spec.json_name in data else spec.default
            for spec in FIELDS
        }
    )


def show_fields(fields: SendguardFields) -> dict[str, Any]:
    """Every field as API answers show it, by JSON name."""
    return {spec.json_name: spec.shown(fields.get(spec)) for spec in FIELDS}
