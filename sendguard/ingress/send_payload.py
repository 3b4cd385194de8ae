"""`POST /v1/messages`'s JSON payload read for building: the common payload checked without
pydantic (`plain_send`), any other by `SendPayload` (sendguard.ingress.payloads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from aiohttp import web

from sendguard.fields import FIELDS, Name
from sendguard.ingress.payloads import (
    MAX_HEADER,
    MAX_RECIPIENTS,
    SendPayload,
    body_data,
    given_fields,
    is_single_line,
    validate_as,
)


class SendContent(Protocol):
    """What building a message reads of a send: a `SendPayload`, or a `PlainSend` where the
    payload was checked without pydantic (`read_send`)."""

    @property
    def from_(self) -> str: ...
    @property
    def to(self) -> list[str]: ...
    @property
    def cc(self) -> list[str]: ...
    @property
    def bcc(self) -> list[str]: ...
    @property
    def subject(self) -> str: ...
    @property
    def text(self) -> str | None: ...
    @property
    def html(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


class PlainSend(NamedTuple):
    """A send payload of the common shape, checked without pydantic (`plain_send`): what
    `SendPayload.model_validate` would have made of it, field for field."""

    from_: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: Mapping[str, str]
    fields: dict[str, Any]
    """The sendguard fields it gives, by JSON name, as `field_overrides` collects them."""


_PLAIN_FIELDS = tuple(spec.json_name for spec in FIELDS if spec.json_type is Name)
"""The sendguard fields a plain payload may give: the names (`campaign`, `offer`)."""
_PLAIN_KEYS = frozenset({"from", "to", "cc", "bcc", "subject", "text", "html", *_PLAIN_FIELDS})
_MAX_NAME = 200
"""`fields.Name`'s length."""


def plain_send(data: Any) -> PlainSend | None:
    """`SendPayload.model_validate(data)` for the common payload, without pydantic; None for
    any other (which pydantic then reads, and refuses with the error it names).

    The common payload: a JSON object of `from`, `to`, `cc`, `bcc`, `subject`, `text`,
    `html` and the name fields (`campaign`, `offer`) only; every address and name ASCII (so
    no lone surrogate, which pydantic refuses in a checked string, and a length is a count
    of characters), within SendEnvelope's limits, the subject and names on one line. For it,
    pydantic's validation (its Python validators called from Rust, a model of 18 fields and
    their defaults made) cost 34,338 instructions for the bench's payload; this is a few
    type, length and character-class checks (tests/unit/test_send_shortcuts.py compares both
    over generated payloads)."""
    if type(data) is not dict or not _PLAIN_KEYS.issuperset(data):
        return None
    sender = data.get("from")
    if type(sender) is not str or not sender.isascii() or len(sender) > MAX_HEADER:
        return None
    to, cc, bcc = (data.get(name, _ABSENT) for name in ("to", "cc", "bcc"))
    if not (_plain_list(to) and _plain_list(cc) and _plain_list(bcc)):
        return None
    subject = data.get("subject", "")
    if (
        type(subject) is not str
        or not subject.isascii()
        or len(subject) > MAX_HEADER
        or not is_single_line(subject)
    ):
        return None
    text, html = data.get("text"), data.get("html")
    if (text is not None and type(text) is not str) or (html is not None and type(html) is not str):
        return None
    fields = {}
    for name in _PLAIN_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if value is not None and (
            type(value) is not str
            or not value.isascii()
            or not 0 < len(value) <= _MAX_NAME
            # fields.Name's one-line check (`fields._single_line`)
            or (not value.isprintable() and any(c in value for c in "\r\n\x00"))
        ):
            return None
        fields[name] = value
    return PlainSend(
        sender,
        [] if to is _ABSENT else to,
        [] if cc is _ABSENT else cc,
        [] if bcc is _ABSENT else bcc,
        subject,
        text,
        html,
        {},  # its own: a large one is pickled to a worker process (offload.in_process)
        fields,
    )


_ABSENT: Any = object()


def _plain_list(value: Any) -> bool:
    """A list of at most MAX_RECIPIENTS ASCII strings, or nothing given."""
    return value is _ABSENT or (
        type(value) is list
        and len(value) <= MAX_RECIPIENTS
        and all(type(item) is str and item.isascii() for item in value)
    )


async def read_send(request: web.Request) -> tuple[SendContent, dict[str, Any]]:
    """A JSON send's payload and the sendguard fields it gives, by JSON name, not yet parsed
    (`overrides_of` parses them); BadRequest names the first bad field. The common payload
    is checked without pydantic (`plain_send`)."""
    data = body_data(await request.read())
    plain = plain_send(data)
    if plain is not None:
        return plain, plain.fields
    payload = validate_as(SendPayload, data)
    return payload, given_fields(payload)
