"""Durable suppressions: what events do to them, and CSV imports as ESPs export them.

An `unsubscribe`, a `complaint` or a hard `bounce` (the default; `bounce_type: soft` only
records the event) suppresses the address until a `resubscribe` event or a reviewer lifts it.
Suppressions live in their own table, keyed by `recipient_key`, and are never pruned; every
change is audited by the store in the same transaction.
"""

from __future__ import annotations

import asyncio
import csv
import email.utils
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sendguard.address import recipient_key, validate_address
from sendguard.errors import InvalidAddress
from sendguard.events import Event, EventType
from sendguard.validation import any_case

if TYPE_CHECKING:
    from sendguard.store.base import Store


class SuppressionReason(StrEnum):
    """Why an address must not get marketing mail any more."""

    UNSUBSCRIBE = "unsubscribe"
    COMPLAINT = "complaint"
    BOUNCE = "bounce"
    MANUAL = "manual"
    IMPORT = "import"


@dataclass(frozen=True)
class Suppression:
    """A durable "do not send": kept until lifted (never pruned), keyed by `recipient_key`."""

    address: str
    reason: SuppressionReason
    source: str
    """Where it came from: `event`, `api`, `import:<file name>`, ..."""
    created_at: datetime
    created_by: str
    note: str = ""


@dataclass(frozen=True)
class SuppressionQuery:
    """Filters for listing suppressions, by address key; `after` is the cursor."""

    address: str | None = None
    reason: SuppressionReason | None = None
    after: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class SuppressionPage:
    """One page of suppressions; `next` is the cursor for the following page."""

    suppressions: Sequence[Suppression]
    next: str | None = None


EVENT_ACTOR = "events"
"""The audit actor of suppressions added or lifted by `POST /v1/events`."""

SUPPRESSING: dict[str, SuppressionReason] = {
    EventType.UNSUBSCRIBE: SuppressionReason.UNSUBSCRIBE,
    EventType.COMPLAINT: SuppressionReason.COMPLAINT,
    EventType.BOUNCE: SuppressionReason.BOUNCE,
}


class Effect(StrEnum):
    """What an event did to the address's suppression."""

    ADDED = "added"
    ALREADY = "already_suppressed"
    LIFTED = "lifted"
    NOT_SUPPRESSED = "not_suppressed"
    OUTDATED = "older_than_suppression"
    """A resubscribe that happened before the current suppression: it lifts nothing."""


async def apply_event(
    store: Store, event: Event, now: datetime, *, soft_bounce: bool = False
) -> Effect | None:
    """Suppress or lift for `event`, audited at `now` (None: the event does not touch
    suppressions). A suppression is dated when the event happened."""
    reason = SUPPRESSING.get(str(event.type))
    if reason is not None and not (reason is SuppressionReason.BOUNCE and soft_bounce):
        (added,) = await store.add_suppressions(
            [Suppression(event.recipient, reason, "event", event.at, EVENT_ACTOR)], now
        )
        return Effect.ADDED if added else Effect.ALREADY
    if event.type == EventType.RESUBSCRIBE:
        # Webhooks arrive late and are replayed: only a resubscribe newer than the opt-out
        # lifts it, so an old "yes" can never undo a newer "no".
        lifted = await store.lift_suppression(
            event.recipient, EVENT_ACTOR, now, "resubscribe event", made_by=event.at
        )
        if lifted is not None:
            return Effect.LIFTED
        if await store.get_suppression(event.recipient) is not None:
            return Effect.OUTDATED
        return Effect.NOT_SUPPRESSED
    return None


@dataclass(frozen=True)
class Recorded:
    """What recording one event did: to the person's suppression, and how many of their
    waiting deliveries it woke."""

    effect: Effect | None
    woken: int


PEOPLE_AT_ONCE = 64
"""How many people's events `record_events` records at once."""


async def record_events(
    store: Store, items: Sequence[tuple[Event, bool]], now: datetime
) -> list[Recorded]:
    """Record each event (with whether it is a soft bounce): its suppression change, the event,
    and a wake-up of the person's waiting deliveries (once per person, after their last event:
    each of their items reports the same `woken`); what each did, in the order given.

    Each person's events are recorded one after another in the order given (an unsubscribe
    and a resubscribe of one batch keep their order); different people's at once, so the
    writes of a batch share the store's commits instead of waiting for one each.
    """
    results: list[Recorded | None] = [None] * len(items)
    by_person: dict[str, list[int]] = {}
    for i, (event, _soft) in enumerate(items):
        by_person.setdefault(recipient_key(event.recipient), []).append(i)
    gate = asyncio.Semaphore(PEOPLE_AT_ONCE)

    async def record_person(indexes: list[int]) -> None:
        async with gate:
            effects = []
            for i in indexes:
                event, soft_bounce = items[i]
                effect = await apply_event(store, event, now, soft_bounce=soft_bounce)
                await store.add_event(event)
                effects.append(effect)
            # The person's waiting deliveries wake once, after all their events of the batch
            # (woken after each, every one woken was judged again once per event: 1,000 events
            # for a person with 500 waiting deliveries made 500,000 decisions), and are judged
            # with all of them. Those held for review too when one of them suppressed them.
            woken = await store.wake_waiting(
                now,
                recipient=items[indexes[0]][0].recipient,
                held=any(effect is Effect.ADDED for effect in effects),
            )
            for i, effect in zip(indexes, effects, strict=True):
                results[i] = Recorded(effect, woken)

    tasks = [asyncio.ensure_future(record_person(indexes)) for indexes in by_person.values()]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # the first failure answers the request: the rest stop
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [result for result in results if result is not None]


# CSV import ----------------------------------------------------------------------------------
ADDRESS_COLUMNS = ("email", "email_address", "address", "recipient")
_ADDRESS_NAMES = "|".join(any_case(name).replace("_", "[ _-]") for name in ADDRESS_COLUMNS)
CSV_PATTERN = (
    f'^(?:[^\\r\\n]*,)?[ \\t]*(?:"(?:{_ADDRESS_NAMES})"|(?:{_ADDRESS_NAMES}))'
    "[ \\t]*(?:,|\\r\\n?|\\n|$)"
)
"""A CSV with an address column in its header row, as a JSON-schema pattern."""
REASON_COLUMNS = ("reason", "type", "suppression_reason")
CREATED_COLUMNS = ("created_at", "created", "date")


class CsvError(ValueError):
    """The CSV cannot be imported at all (no header, no address column)."""


@dataclass(frozen=True)
class Invalid:
    """A row that was not imported, with its line number in the file."""

    line: int
    message: str


@dataclass(frozen=True)
class ParsedCsv:
    """The rows of an import that can be suppressed, and those that cannot."""

    rows: Sequence[Suppression]
    invalid: Sequence[Invalid]
    duplicates: int = 0
    """Rows naming an address an earlier row of the file already named."""
    warnings: Sequence[Invalid] = ()
    """Rows imported with a correction (an unreadable or future date taken as now)."""


def _column(header: Sequence[str], names: Sequence[str]) -> int | None:
    normalised = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    for name in names:
        if name in normalised:
            return normalised.index(name)
    return None


def import_reason(text: str) -> SuppressionReason:
    """An ESP's reason column as ours: SendGrid, Postmark and Mailgun word them differently."""
    word = text.strip().lower()
    if "unsub" in word:
        return SuppressionReason.UNSUBSCRIBE
    if "complain" in word or "spam" in word:
        return SuppressionReason.COMPLAINT
    if "bounce" in word:
        return SuppressionReason.BOUNCE
    if "manual" in word:
        return SuppressionReason.MANUAL
    return SuppressionReason.IMPORT


def import_time(text: str) -> datetime:
    """RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), Unix seconds or RFC 2822 (Mailgun)."""
    value = text.strip()
    if value.isdigit():
        return datetime.fromtimestamp(int(value), UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise ValueError(f"created_at {value!r} is not a time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _rows(reader: Any) -> Iterator[list[str]]:
    """The rows of `reader`; a file the csv module cannot read is a CsvError naming the line."""
    try:
        yield from reader
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}; send the export as CSV (UTF-8)") from None


def parse_csv(text: str, *, source: str, actor: str, now: datetime) -> ParsedCsv:
    """Suppressions from a CSV export with a header row; CsvError if it has no address column."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    lines = _rows(reader)
    header = next(lines, None)
    if header is None:
        raise CsvError("the CSV is empty; it needs a header row with an email column")
    address_at = _column(header, ADDRESS_COLUMNS)
    if address_at is None:
        raise CsvError(
            "the header row has no address column; name one "
            + ", ".join(ADDRESS_COLUMNS)
            + f" (found: {', '.join(header)})"
        )
    reason_at = _column(header, REASON_COLUMNS)
    created_at = _column(header, CREATED_COLUMNS)
    rows: list[Suppression] = []
    invalid: list[Invalid] = []
    warnings: list[Invalid] = []
    seen: set[str] = set()
    duplicates = 0
    for row in lines:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        try:
            address = validate_address(row[address_at].strip() if address_at < len(row) else "")
        except InvalidAddress as exc:
            invalid.append(Invalid(line, str(exc)))
            continue
        reason_text = row[reason_at] if reason_at is not None and reason_at < len(row) else ""
        created_text = row[created_at] if created_at is not None and created_at < len(row) else ""
        # An address that opted out is suppressed even when its date is unreadable or lies in
        # the future: it is then dated now, and the row is reported as a warning.
        created = now
        if created_text.strip():
            try:
                created = import_time(created_text)
            except ValueError as exc:
                warnings.append(Invalid(line, f"{exc}; suppressed as of now"))
            else:
                if created > now:
                    warnings.append(
                        Invalid(
                            line,
                            f"created_at {created_text.strip()!r} is in the future;"
                            " suppressed as of now",
                        )
                    )
                    created = now
        if recipient_key(address) in seen:
            duplicates += 1  # a file may list an address once per reason; the first one counts
            continue
        seen.add(recipient_key(address))
        reason = import_reason(reason_text) if reason_text.strip() else SuppressionReason.IMPORT
        note = reason_text.strip() if reason is SuppressionReason.IMPORT else ""
        rows.append(Suppression(address, reason, source, created, actor, note[:200]))
    return ParsedCsv(rows, invalid, duplicates, warnings)
