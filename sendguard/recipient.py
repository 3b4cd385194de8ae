"""What a decision reads about its recipient, read at once: sends, events, suppression, time
zone and earlier copies of the message (the resend check)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, overload

from sendguard.deliveries import HistoryEntry
from sendguard.events import Event
from sendguard.facts import Fact
from sendguard.message import MessageClass
from sendguard.resend import Copy
from sendguard.suppressions import Suppression

TIMEZONE_FACT = "timezone"
"""The fact key that holds a contact's time zone (an IANA name such as `Europe/Berlin`)."""

SendRow = Sequence[Any]
"""A send as a SQL store reads it (`SendRows`): `(kind, delivery_id, campaign, content_hash,
offer, at)`, `kind` the message class and whether the send was made or only reserved in one
integer (`send_kind`; `SEND_KINDS` reads it back), `at` integer microseconds since the epoch
(`to_micros`'s unit). The positions are named below."""
SEND_KIND, SEND_DELIVERY, SEND_CAMPAIGN, SEND_CONTENT, SEND_OFFER, SEND_AT = range(6)


def send_kind(message_class: MessageClass, sent: bool) -> int:
    """The `kind` of a send row: below zero, two per message class (a column less per row
    than the class and the state in columns of their own; Python 3.11's sqlite3 releases
    and takes the GIL around every column it fetches)."""
    return _KIND_BASE[message_class] + sent


_KIND_BASE = {c: -2 * (i + 1) for i, c in enumerate(MessageClass)}
SEND_KINDS = {send_kind(c, sent): (c, sent) for c in MessageClass for sent in (False, True)}
"""A send row's `kind`: its message class and whether it was made (True) or only reserved."""
_KIND_CLASS = {kind: c for kind, (c, _) in SEND_KINDS.items()}
_ROW_AT = itemgetter(SEND_AT)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """A timezone-aware `at` as integer microseconds since the epoch, exactly: `from_micros`
    of the result is `at` (`to_micros` goes through a float and can be one microsecond low)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def send_row(entry: HistoryEntry) -> SendRow:
    """The `SendRow` of a HistoryEntry (a store that gives entries, not rows)."""
    return (
        send_kind(entry.message_class, entry.sent),
        entry.delivery_id,
        entry.campaign,
        entry.content_hash,
        entry.offer,
        micros(entry.at),
    )


def _entry(key: str, row: SendRow) -> HistoryEntry:
    """The HistoryEntry of a send row of recipient key `key`."""
    entry: HistoryEntry = object.__new__(HistoryEntry)
    message_class, sent = SEND_KINDS[row[0]]
    # Its fields put in its dict in their order, as its __init__ does (without the call).
    fields = entry.__dict__
    fields["delivery_id"] = row[1]
    fields["recipient"] = key
    fields["campaign"] = row[2]
    fields["message_class"] = message_class
    fields["content_hash"] = row[3]
    fields["at"] = datetime.fromtimestamp(row[5] / 1_000_000, UTC)
    fields["sent"] = sent
    fields["offer"] = row[4]
    return entry


class SendRows(Sequence[HistoryEntry]):
    """A recipient's sends, oldest first, kept as the rows a SQL store read (`SendRow`): a
    sequence of `HistoryEntry` for whoever reads it as one, whose entries (each with its
    `datetime`) are made the first time any is asked for.

    A decision reads a row per send in the longest window of its policies, and the built-in
    policies only count them, on the rows' microseconds (`PolicyContext.send_micros_now`,
    `sends_now`): a HistoryEntry and a `datetime` per send cost more than the row's read.
    """

    __slots__ = ("_entries", "key", "rows")
    __hash__ = None  # type: ignore[assignment]  # unhashable, as the list it stands for

    def __init__(self, key: str, rows: list[SendRow]) -> None:
        self.key = key
        """The recipient key of every send (not a column of the rows)."""
        self.rows = rows
        """The sends' rows, oldest first (`SendRow`)."""
        self._entries: list[HistoryEntry] | None = None

    def entries(self) -> list[HistoryEntry]:
        """The sends as HistoryEntrys (made once)."""
        entries = self._entries
        if entries is None:
            key = self.key
            entries = self._entries = [_entry(key, row) for row in self.rows]
        return entries

    def since(self, since: int, campaign: str | None = None) -> list[HistoryEntry]:
        """The entries of the sends at or after `since` (microseconds), of `campaign` if
        given: only those are made."""
        rows = self.rows
        start = bisect_left(rows, since, key=_ROW_AT)
        if self._entries is not None:
            entries = self._entries[start:]
        else:
            key = self.key
            entries = [_entry(key, row) for row in rows[start:]]
        if campaign is None:
            return entries
        return [h for h in entries if h.campaign == campaign]

    def after(self, since: int) -> list[SendRow]:
        """The rows of the sends at or after `since` (microseconds), oldest first."""
        rows = self.rows
        return rows[bisect_left(rows, since, key=_ROW_AT) :]

    def times(
        self,
        since: int,
        campaign: str | None,
        exclude_classes: Sequence[MessageClass],
        limit: int,
    ) -> list[int]:
        """When the sends at or after `since` were reserved (microseconds), newest first, at
        most `limit` (of `campaign` if given, not of `exclude_classes`)."""
        times: list[int] = []
        classes = _KIND_CLASS
        for row in reversed(self.rows):
            at = row[5]
            if at < since or len(times) == limit:
                break
            if (campaign is None or row[2] == campaign) and classes[row[0]] not in exclude_classes:
                times.append(at)
        return times

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> HistoryEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[HistoryEntry]: ...

    def __getitem__(self, index: int | slice) -> HistoryEntry | list[HistoryEntry]:
        return self.entries()[index]

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self.entries())

    def __reversed__(self) -> Iterator[HistoryEntry]:
        return reversed(self.entries())

    def __eq__(self, other: object) -> bool:
        # Equal to the list of the same entries, as the list of entries it replaces was.
        if isinstance(other, SendRows):
            return self.entries() == other.entries()
        if isinstance(other, list):
            return self.entries() == other
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self.entries())


@dataclass(frozen=True)
class RecipientReads:
    """The store's records about one recipient key at one moment, as one decision needs them."""

    history: Sequence[HistoryEntry]
    """Sends reserved or made since the `history_since` asked for, oldest first (the SQL
    stores give a `SendRows`: the same entries, made when first asked for)."""
    events: Sequence[Event]
    """Events since the `events_since` asked for, oldest first."""
    suppression: Suppression | None
    timezone: Fact | None
    """The recipient's `timezone` fact, if any."""
    copies: tuple[Copy, ...] = ()
    """The recipient's deliveries of earlier copies of the message (the `copies` asked for),
    oldest first; empty when none were asked for."""

    def __init__(
        self,
        history: Sequence[HistoryEntry],
        events: Sequence[Event],
        suppression: Suppression | None,
        timezone: Fact | None,
        copies: tuple[Copy, ...] = (),
    ) -> None:
        # One per decision: one update of the dict, not a call of object.__setattr__ per field
        # as the generated __init__ of a frozen dataclass does.
        self.__dict__.update(
            history=history,
            events=events,
            suppression=suppression,
            timezone=timezone,
            copies=copies,
        )
