"""Reading sendguard's fields from the headers a tool already sets (first match wins)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sendguard.duration import parse_duration
from sendguard.errors import InvalidMessage
from sendguard.headers import Headers
from sendguard.message import Match, MessageClass, OnTimeout, Requirement, SendguardFields

DEFAULT_SOURCES: Mapping[str, Sequence[str]] = {
    "campaign": ("X-Sendguard-Campaign", "X-Campaign", "X-Mailgun-Tag", "List-Id"),
    "class": ("X-Sendguard-Class",),
    "requires": ("X-Sendguard-Requires",),
    "wait": ("X-Sendguard-Wait",),
    "data_as_of": ("X-Sendguard-Data-As-Of",),
    "timezone": ("X-Sendguard-Timezone",),
    "not_before": ("X-Sendguard-Not-Before",),
    "offer": ("X-Sendguard-Offer",),
    "unless": ("X-Sendguard-Unless",),
    "on_timeout": ("X-Sendguard-On-Timeout",),
}


@dataclass(frozen=True)
class FieldOverrides:
    """Fields given beside the headers (the HTTP payload's `campaign`, `not_before`, ...):
    each one named in `given` replaces what the headers say, with its value from `values`."""

    values: SendguardFields = dataclasses.field(default_factory=SendguardFields)
    given: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.given - {f.name for f in dataclasses.fields(SendguardFields)}
        if unknown:
            raise ValueError(f"not sendguard fields: {', '.join(sorted(unknown))}")

    def apply(self, fields: SendguardFields) -> SendguardFields:
        """`fields` with the given ones replaced."""
        if not self.given:
            return fields
        return dataclasses.replace(fields, **{n: getattr(self.values, n) for n in self.given})


_LIST_ID = re.compile(r"<([^<>]+)>")


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


_PREMISE = re.compile(
    r"(?P<key>[^\s=!,;|]+)\s*(?:(?P<op>!=|=)|\s(?P<in>in)\s)\s*(?P<values>.*)", re.DOTALL
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


def read_fields(headers: Headers, sources: Mapping[str, Sequence[str]]) -> SendguardFields:
    """Build SendguardFields from `headers`; malformed values raise InvalidMessage."""

    def first(name: str) -> tuple[str, str] | None:
        for header in sources.get(name, DEFAULT_SOURCES[name]):
            value = headers.get(header)
            if value is not None and value.strip():
                return header, value.strip()
        return None

    def every(name: str) -> tuple[str, list[str]] | None:
        for header in sources.get(name, DEFAULT_SOURCES[name]):
            values = [v for v in headers.get_all(header) if v.strip()]
            if values:
                return header, values
        return None

    campaign = None
    if found := first("campaign"):
        header, value = found
        match = _LIST_ID.search(value) if header.lower() == "list-id" else None
        campaign = match.group(1).strip() if match else value

    message_class = MessageClass.MARKETING
    if found := first("class"):
        header, value = found
        try:
            message_class = MessageClass(value.lower())
        except ValueError:
            raise InvalidMessage(
                f"{header}: {value!r} is not a class; use transactional or marketing", field=header
            ) from None

    def premises(name: str) -> tuple[Requirement, ...]:
        out: list[Requirement] = []
        if found_all := every(name):
            header, values = found_all
            for value in values:
                out.extend(
                    parse_requirement(part, field=header)
                    for part in value.split(",")
                    if part.strip()
                )
        return tuple(out)

    requires = premises("requires")

    wait = None
    if found := first("wait"):
        header, value = found
        try:
            wait = parse_duration(value)
        except ValueError as exc:
            raise InvalidMessage(f"{header}: {exc}", field=header) from None

    data_as_of = parse_time(found[1], field=found[0]) if (found := first("data_as_of")) else None
    not_before = parse_time(found[1], field=found[0]) if (found := first("not_before")) else None
    timezone = check_timezone(found[1], field=found[0]) if (found := first("timezone")) else None
    offer = found[1] if (found := first("offer")) else None
    on_timeout = (
        parse_on_timeout(found[1], field=found[0]) if (found := first("on_timeout")) else None
    )
    return SendguardFields(
        campaign=campaign,
        message_class=message_class,
        requires=requires,
        wait=wait,
        data_as_of=data_as_of,
        timezone=timezone,
        not_before=not_before,
        offer=offer,
        unless=premises("unless"),
        on_timeout=on_timeout,
    )
