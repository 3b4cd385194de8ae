"""What a decision reads about its recipient, read at once: sends, events, suppression, time
zone and earlier copies of the message (the resend check)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sendguard.deliveries import HistoryEntry
from sendguard.events import Event
from sendguard.facts import Fact
from sendguard.resend import Copy
from sendguard.suppressions import Suppression

TIMEZONE_FACT = "timezone"
"""The fact key that holds a contact's time zone (an IANA name such as `Europe/Berlin`)."""


@dataclass(frozen=True)
class RecipientReads:
    """The store's records about one recipient key at one moment, as one decision needs them."""

    history: Sequence[HistoryEntry]
    """Sends reserved or made since the `history_since` asked for, oldest first."""
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
