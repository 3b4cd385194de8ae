"""How backends turn model objects into column values and back (shared by every backend)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from sendguard import fields as fields_table
from sendguard.address import recipient_key
from sendguard.clock import from_micros, to_micros
from sendguard.headers import Headers
from sendguard.message import (
    Delivery,
    DeliveryState,
    HoldOrigin,
    Message,
    SendguardFields,
)
from sendguard.verdict import Action, Mode, PolicyOutcome, Verdict


def dump_json(value: Any) -> str:
    """`value` (strings, integers, None, lists and string-keyed objects of them) as JSON text.

    orjson writes it (about ten times faster than the json module: a message's fields,
    headers and outcomes are written by the store's writer inside its transaction, holding
    the GIL); what orjson refuses (a lone surrogate, an integer beyond 64 bits) the json
    module writes as before. The text may differ in blanks; every reader parses it."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, ensure_ascii=False)


def dump_headers(headers: Headers) -> str:
    """Headers as a JSON list of [name, value] pairs."""
    return dump_json(headers.items)


def load_headers(text: str) -> Headers:
    """The inverse of `dump_headers`."""
    return Headers(tuple((str(k), str(v)) for k, v in json.loads(text)))


def dump_fields(fields: SendguardFields) -> str:
    """SendguardFields as a JSON object (each field as `sendguard.fields.FIELDS` stores it)."""
    return dump_json(fields_table.dump_fields(fields))


def load_fields(text: str) -> SendguardFields:
    """The inverse of `dump_fields`."""
    return fields_table.load_fields(json.loads(text))


def outcome_columns(outcome: PolicyOutcome) -> tuple[str, str, str, str, str | None]:
    """(policy, action, mode, reason, error) of an outcome; `until` is stored separately."""
    return (
        outcome.policy,
        outcome.verdict.action.value,
        outcome.mode.value,
        outcome.verdict.reason,
        outcome.error,
    )


def make_outcome(
    policy: str, action: str, mode: str, reason: str, until: datetime | None, error: str | None
) -> PolicyOutcome:
    """The inverse of `outcome_columns`."""
    return PolicyOutcome(
        policy=policy,
        verdict=Verdict(Action(action), reason, until if Action(action) is Action.DELAY else None),
        mode=Mode(mode),
        error=error,
    )


def dump_outcomes(outcomes: Sequence[PolicyOutcome]) -> str:
    """A decision's outcomes as one JSON list of [policy, action, mode, reason, until, error]."""
    return dump_json(
        [[*outcome_columns(o)[:4], micros(o.verdict.until), o.error] for o in outcomes]
    )


def load_outcomes(text: str) -> list[PolicyOutcome]:
    """The inverse of `dump_outcomes`."""
    return [
        make_outcome(policy, action, mode, reason, moment(until), error)
        for policy, action, mode, reason, until, error in json.loads(text)
    ]


DELIVERY_ROW_COLUMNS = (
    "id, recipient, state, created_at, updated_at, due_at, attempts, first_attempt_at,"
    " last_error, approved_by, hold_origin, override_by"
)
"""The columns of a delivery's own row that `delivery_from_columns` reads, unqualified."""
DELIVERY_COLUMNS = """
    d.id, d.recipient, d.state, d.created_at, d.updated_at, d.due_at, d.attempts,
    d.first_attempt_at, d.last_error, d.approved_by, d.hold_origin, d.override_by,
    m.id, m.received_at, m.ingress, m.mail_from, m.recipients, m.headers, m.fields, m.size,
    m.content_hash, m.smtputf8, m.body_8bit, m.links
"""
DELIVERY_SELECT = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id"
)
MESSAGE_SELECT = (
    "SELECT id, received_at, ingress, mail_from, recipients, headers, fields, size,"
    " content_hash, smtputf8, body_8bit, links FROM messages"
)


def micros(at: datetime | None) -> int | None:
    """A time as stored (integer microseconds since the epoch), or None."""
    return None if at is None else to_micros(at)


def moment(value: int | None) -> datetime | None:
    """The inverse of `micros`."""
    return None if value is None else from_micros(value)


class MessageCache:
    """Decoded messages by id, the most recently used `size` of them.

    Safe because a stored message is never rewritten (only deleted when pruned, and its id
    is never reused), so a row read again decodes to the same frozen Message.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, Message] = OrderedDict()
        self.hits = 0

    def get(self, message_id: str) -> Message | None:
        """The decoded message, if kept."""
        found = self._items.get(message_id)
        if found is not None:
            self._items.move_to_end(message_id)
            self.hits += 1
        return found

    def put(self, message: Message) -> None:
        """Keep `message`, forgetting the least recently used one past `size`."""
        self._items[message.id] = message
        if len(self._items) > self._size:
            self._items.popitem(last=False)


def as_stored(message: Message) -> Message:
    """`message` as a backend reads it back: its time at the microsecond the column keeps
    (everything else round-trips unchanged), so it may be put in a MessageCache."""
    at = message.received_at
    stored = from_micros(to_micros(at))
    if stored == at and at.tzinfo is stored.tzinfo:  # the common case: no copy to make
        return message
    return replace(message, received_at=stored)


_message_cache: ContextVar[MessageCache | None] = ContextVar("message_cache", default=None)


@contextmanager
def caching_messages(size: int = 50_000) -> Iterator[MessageCache]:
    """Within this block (and the tasks it starts), `message_from_row` decodes each message
    once. Off by default: the server decodes every row as read. A replay turns it on, since
    each delivery of its scratch store is read again after every change and re-decoding its
    message's headers and fields was a fifth of the replay's time."""
    cache = MessageCache(size)
    token = _message_cache.set(cache)
    try:
        yield cache
    finally:
        _message_cache.reset(token)


def message_from_row(row: Sequence[Any]) -> Message:
    """A Message from the columns of MESSAGE_SELECT (see `caching_messages`)."""
    cache = _message_cache.get()
    if cache is None:
        return _decode_message(row)
    message = cache.get(row[0])
    if message is None:
        message = _decode_message(row)
        cache.put(message)
    return message


def _decode_message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        received_at=from_micros(row[1]),
        ingress=row[2],
        mail_from=row[3],
        recipients=tuple(json.loads(row[4])),
        headers=load_headers(row[5]),
        fields=load_fields(row[6]),
        size=row[7],
        content_hash=row[8],
        smtputf8=bool(row[9]),
        body_8bit=bool(row[10]),
        links=row[11],
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A Delivery from the columns of DELIVERY_SELECT."""
    return delivery_from_columns(row[:12], message_from_row(row[12:]))


_STATES = {state.value: state for state in DeliveryState}
"""States by their stored text: `DeliveryState(text)` runs EnumType.__call__ in Python."""


def delivery_from_columns(row: Sequence[Any], message: Message) -> Delivery:
    """A Delivery of `message` from DELIVERY_ROW_COLUMNS."""
    return Delivery(
        id=row[0],
        message=message,
        recipient=row[1],
        state=_STATES.get(row[2]) or DeliveryState(row[2]),
        created_at=from_micros(row[3]),
        updated_at=from_micros(row[4]),
        due_at=moment(row[5]),
        attempts=row[6],
        first_attempt_at=moment(row[7]),
        last_error=row[8],
        approved_by=row[9],
        hold_origin=HoldOrigin(row[10]) if row[10] else None,
        override_by=row[11],
    )


def contact_key(contact: str | None) -> str:
    """How a fact's contact is kept: its recipient key (so `Paula@Prospect.Example` and
    `paula@prospect.example` are one person, as for deliveries); '' stands for "no contact"
    (the primary key cannot hold NULL in a useful way)."""
    return recipient_key(contact) if contact else ""
