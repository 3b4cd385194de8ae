"""Where a replay's traffic comes from: a sendguard store, a JSONL export or an mbox.

Each source yields recorded items (messages, events, facts) with the time they arrived; a
message also says what was decided for each recipient then. A file comes from a tool that
had no sendguard in front of it, so everything in it was sent: "forwarded then".
"""

from __future__ import annotations

import email.utils
import json
import mailbox
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path

from sendguard.address import recipient_key
from sendguard.content import Fingerprint
from sendguard.deliveries import DeliveryQuery
from sendguard.events import Event, event_type
from sendguard.facts import Fact
from sendguard.message import Delivery, DeliveryState, Message
from sendguard.store.base import Store
from sendguard.verdict import Action

_ACTION_OF = {
    DeliveryState.QUEUED: Action.FORWARD,
    DeliveryState.SENDING: Action.FORWARD,
    DeliveryState.SENT: Action.FORWARD,
    DeliveryState.DEFERRED: Action.FORWARD,
    DeliveryState.FAILED: Action.FORWARD,
    DeliveryState.DELAYED: Action.DELAY,
    DeliveryState.HELD: Action.HOLD,
    DeliveryState.DROPPED: Action.DROP,
}


class SourceError(ValueError):
    """A replay source cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class RecordedMessage:
    """A message as it arrived, and what was decided for each recipient then."""

    at: datetime
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    then: dict[str, Action] = field(default_factory=dict)
    """The first verdict per recipient; a recipient not named here was forwarded."""
    source_id: str | None = None
    """The id the source knows the message by, which its events name."""
    fingerprint: Fingerprint | None = None
    """The content's fingerprints (`content_hash`, link targets) as recorded, so the replay
    need not parse and hash the content again; None (a file, a message stored before schema
    14) has them taken from the content."""
    ingress: str | None = None
    """The ingress it arrived by, when the source knows it (the store does): a replayed SMTP
    message is checked for retransmissions as it was (sendguard/resend.py)."""


@dataclass(frozen=True)
class RecordedEvent:
    """An engagement or suppression event as it arrived (`message_id` is a source id)."""

    event: Event


@dataclass(frozen=True)
class RecordedFact:
    """A context fact as it arrived."""

    fact: Fact


Recorded = RecordedMessage | RecordedEvent | RecordedFact


def at_of(item: Recorded) -> datetime:
    """When an item arrived."""
    if isinstance(item, RecordedMessage):
        return item.at
    if isinstance(item, RecordedEvent):
        return item.event.at
    return item.fact.observed_at


def _time(text: object, where: str) -> datetime:
    if not isinstance(text, str):
        raise SourceError(f"{where}: `at` must be an RFC 3339 time")
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise SourceError(f"{where}: `at` {text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise SourceError(f"{where}: `at` {text!r} needs a UTC offset")
    return at.astimezone(UTC)


def _addresses(value: object, where: str, name: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(a, str) and a for a in items):
        raise SourceError(f"{where}: `{name}` must be an address or a list of addresses")
    return tuple(str(a) for a in items)


def _compose(mail_from: str, to: Sequence[str], headers: dict[str, str], body: str) -> bytes:
    """RFC 5322 content from a JSONL line: its headers, with From/To added when absent."""
    given = {name.lower() for name in headers}
    lines = [f"{name}: {value}" for name, value in headers.items()]
    if "from" not in given:
        lines.insert(0, f"From: {mail_from}")
    if "to" not in given:
        lines.insert(1, f"To: {', '.join(to)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def _jsonl_line(data: dict[str, object], where: str) -> Recorded:
    if "event" in data:
        kind = data["event"]
        recipient = data.get("recipient")
        if not isinstance(kind, str) or not isinstance(recipient, str):
            raise SourceError(f"{where}: an event needs `event` and `recipient` strings")
        message = data.get("message")
        return RecordedEvent(
            Event(
                event_type(kind),
                recipient,
                _time(data.get("at"), where),
                message_id=message if isinstance(message, str) else None,
            )
        )
    if "fact" in data:
        key, value = data.get("fact"), data.get("value")
        if not isinstance(key, str) or not isinstance(value, str):
            raise SourceError(f"{where}: a fact needs `fact` and `value` strings")
        contact = data.get("contact")
        return RecordedFact(
            Fact(
                key,
                value,
                _time(data.get("at"), where),
                contact if isinstance(contact, str) else None,
            )
        )
    mail_from = data.get("from")
    if not isinstance(mail_from, str):
        raise SourceError(f"{where}: `from` must be an address")
    to = _addresses(data.get("to"), where, "to")
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise SourceError(f"{where}: `headers` must map names to strings")
    body = data.get("text", "")
    ident = data.get("id")
    return RecordedMessage(
        _time(data.get("at"), where),
        mail_from,
        to,
        _compose(mail_from, to, {str(k): str(v) for k, v in headers.items()}, str(body)),
        source_id=ident if isinstance(ident, str) else None,
    )


def read_jsonl(path: Path) -> list[Recorded]:
    """One message per line (`from`, `to`, `headers`, `at`, optional `text` and `id`); a line
    with `event` (`recipient`, `at`, optional `message`: a message's `id`) is an engagement
    event, one with `fact` (`value`, `at`, optional `contact`) a context fact."""
    items: list[Recorded] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise SourceError(f"{where}: each line must be a JSON object")
        items.append(_jsonl_line(data, where))
    return items


def read_mbox(path: Path) -> list[Recorded]:
    """Every message of an mbox, at the time its Date header gives, to its To and Cc."""
    if not path.is_file():
        raise SourceError(f"cannot read {path}: no such file")
    items: list[Recorded] = []
    parser = BytesParser(policy=email_policy.compat32)
    box = mailbox.mbox(path, create=False)
    try:
        for number, entry in enumerate(box, 1):
            raw = entry.as_bytes()
            parsed = parser.parsebytes(raw, headersonly=True)
            where = f"{path}: message {number}"
            date = parsed.get("Date")
            try:
                at = email.utils.parsedate_to_datetime(str(date)) if date else None
            except (TypeError, ValueError):
                at = None
            if at is None or at.tzinfo is None:
                raise SourceError(f"{where}: needs a Date header with a time zone")
            _, sender = email.utils.parseaddr(str(parsed.get("From", "")))
            to = tuple(
                a
                for _, a in email.utils.getaddresses(
                    [str(v) for v in (parsed.get_all("To") or []) + (parsed.get_all("Cc") or [])]
                )
                if a
            )
            if not to:
                raise SourceError(f"{where}: has no To or Cc address")
            ident = parsed.get("Message-ID")
            items.append(
                RecordedMessage(
                    at.astimezone(UTC), sender, to, raw, source_id=str(ident) if ident else None
                )
            )
    finally:
        box.close()
    return items


def _with_sendguard_headers(content: bytes, message: Message) -> bytes:
    """The stored content with the `X-Sendguard-*` headers it arrived with: the store keeps
    the copy that is forwarded, without them, but the candidate's policies read them."""
    own = [
        f"{name}: {value}\r\n".encode()
        for name, value in message.headers.items
        if name.lower().startswith("x-sendguard-")
    ]
    return b"".join(own) + content


async def read_store(store: Store, since: datetime, until: datetime) -> list[Recorded]:
    """The messages a store accepted in [since, until), with each recipient's first state,
    and the events of their recipients from `since` on (later ones tell what was engaged with).

    Facts are not replayed from a store: its contract keeps only the latest value of a key.
    """
    deliveries: list[Delivery] = []
    cursor: str | None = None
    while True:
        page = await store.list_deliveries(DeliveryQuery(since=since, after=cursor, limit=500))
        deliveries.extend(d for d in page.deliveries if since <= d.message.received_at < until)
        if page.next is None:
            break
        cursor = page.next
    records = {}
    ids = [d.id for d in deliveries]
    for start in range(0, len(ids), 500):
        records.update(await store.delivery_records(ids[start : start + 500]))
    by_message: dict[str, list[tuple[str, Action]]] = {}
    messages = {}
    for delivery in deliveries:
        transitions = records[delivery.id].transitions
        first = transitions[0].state if transitions else delivery.state
        by_message.setdefault(delivery.message.id, []).append(
            (delivery.recipient, _ACTION_OF.get(first, Action.FORWARD))
        )
        messages[delivery.message.id] = delivery.message
    items: list[Recorded] = []
    for message_id, message in messages.items():
        content = _with_sendguard_headers(await store.message_content(message_id), message)
        then = dict(by_message[message_id])
        items.append(
            RecordedMessage(
                message.received_at,
                message.mail_from,
                tuple(then),
                content,
                then,
                source_id=message_id,
                fingerprint=(
                    Fingerprint(message.content_hash, message.links)
                    if message.content_hash is not None and message.links is not None
                    else None
                ),
                ingress=message.ingress,
            )
        )
    for recipient in sorted({recipient_key(d.recipient) for d in deliveries}):
        items.extend(RecordedEvent(e) for e in await store.events(recipient, since))
    return items
