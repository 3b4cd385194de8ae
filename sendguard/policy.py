"""The policy plugin contract: everything a policy author needs, in one file.

A policy is a class registered under the entry point group `sendguard.policies`::

    [project.entry-points."sendguard.policies"]
    my_policy = "my_package.module:MyPolicy"

The class has a pydantic `Options` model (its `options:` in the config, validated once at
start; unknown keys are errors) and is constructed with an instance of it. For every delivery
the engine awaits `evaluate(delivery, ctx)`, which returns a `Verdict` with a reason. A policy
only reports what it found; the engine combines the verdicts and applies `mode`
(`enforce` | `shadow`), the time budget and `on_error` (`forward` | `hold`) from the config.
Built-in policies in `plugins/` are registered exactly like this.

`ctx` is a read-only view of the store at the moment of the decision (`ctx.now` is the same for
every policy judging one delivery). Policies never write: what counts as sent is recorded by
the engine and the store when a delivery is forwarded.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Final, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from sendguard.address import recipient_key
from sendguard.approvals import Campaign, ContentApproval
from sendguard.clock import from_micros
from sendguard.deliveries import HistoryEntry
from sendguard.events import Event
from sendguard.facts import Fact
from sendguard.message import Delivery, MessageClass
from sendguard.recipient import RecipientReads, SendRow, SendRows, micros, send_row
from sendguard.resend import Copy, CopyQuery
from sendguard.store.base import PolicyReads
from sendguard.suppressions import Suppression
from sendguard.verdict import Verdict

__all__ = [
    "ENTRY_POINT_GROUP",
    "NOTHING",
    "UNREAD",
    "HonoursSuppressions",
    "JudgesAtOnce",
    "Lookback",
    "Policy",
    "PolicyContext",
    "PolicyLoadError",
    "PolicyOptions",
    "ReadsStore",
    "Unread",
    "class_exempt",
    "installed_policies",
    "load_policy_class",
]

ENTRY_POINT_GROUP = "sendguard.policies"


class PolicyOptions(BaseModel):
    """Base of every policy's `Options` model: an unknown key in `options:` is a config error
    that names it (not silently ignored), and the options cannot change once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy(Protocol):
    """What a policy class looks like."""

    Options: ClassVar[type[BaseModel]]
    """The pydantic model of this policy's `options:`; derive it from `PolicyOptions`."""

    def __init__(self, options: Any) -> None:
        """Build the policy from its validated options (an instance of `Options`)."""

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        """Judge one delivery. Raise nothing on purpose: errors count as `on_error`."""
        ...


NOTHING = timedelta(0)
"""A `Lookback` span for what a policy does not read at all."""


class Unread(Enum):
    """What a `PolicyContext` `..._now` read answers when it would have to ask the store."""

    UNREAD = "unread"


UNREAD: Final = Unread.UNREAD
"""See `Unread` (a module global: `Unread.UNREAD` goes through EnumType's attribute hook)."""


@runtime_checkable
class JudgesAtOnce(Protocol):
    """A policy that can often judge without awaiting anything (optional; the built-in
    policies all can).

    The engine calls `evaluate_now` first, as a plain call; a verdict is the policy's outcome
    as `evaluate`'s would be, None sends it to `await evaluate(delivery, ctx)` as usual. A
    coroutine made, stepped and finished per policy and decision costs more than most
    policies' own work; what a decision reads about the recipient (and the delivery's
    campaign) is read before the first policy, so `ctx`'s `..._now` reads answer most
    policies from memory. It must give exactly the verdict `evaluate` would give, or None,
    and read nothing but those (they never touch the store); errors count as `on_error`,
    as `evaluate`'s do.
    """

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """The verdict, if nothing needs awaiting; else None."""
        ...


def class_exempt(delivery: Delivery) -> Verdict:
    """Forward: the delivery's message class is one the policy exempts.

    The reason says the class; a bounce's says why it has that class (the null sender `<>`
    makes a message transactional unless its X-Sendguard-Class says otherwise), since
    nothing else in the timeline would.
    """
    message = delivery.message
    kind = message.fields.message_class
    if not message.mail_from and kind is MessageClass.TRANSACTIONAL:
        return Verdict.forward(f"{kind.value} mail is exempt (a bounce: null sender <>)")
    return Verdict.forward(f"{kind.value} mail is exempt")


@dataclass(frozen=True)
class Lookback:
    """How far back from now a policy reads each kind of record, so retention keeps it.

    `None` means "at any age": retention then never prunes that kind of record. A policy that
    reads nothing of a kind leaves it at zero (the `store.retention` floor applies).
    """

    history: timedelta | None = NOTHING
    """Sends reserved or made (`ctx.history`, `ctx.send_times`)."""
    events: timedelta | None = NOTHING
    facts: timedelta | None = NOTHING
    deliveries: timedelta | None = NOTHING
    """Deliveries by creation time (`ctx.campaign_volume`)."""
    event_types: frozenset[str] = frozenset()
    """Custom event types (beyond the built-in ones) this policy reads; `POST /v1/events`
    accepts exactly the built-in types and these."""
    events_at_any_age: frozenset[str] = frozenset()
    """Event types this policy reads at any age, whatever `events` says (repetition: a
    purchase ends an offer for good): retention never prunes events of these types."""


@runtime_checkable
class ReadsStore(Protocol):
    """A policy that says what it reads (optional; built-in policies all do).

    Retention keeps every record a configured policy would still read, so pruning never
    changes a decision. A policy without `lookback` gets `store.retention` only.
    """

    def lookback(self) -> Lookback:
        """What this policy, with its options, reads of the store."""
        ...


@runtime_checkable
class HonoursSuppressions(Protocol):
    """A policy that drops mail to suppressed addresses (optional; `fatigue` is one).

    Suppressions are recorded whatever the config; only a policy drops mail because of them.
    What it declares here is what the timeline (`suppression.dropped_classes`), `check-config`
    and the start log tell a user about a suppressed address, so it must match `evaluate`.
    """

    def suppressed_classes(self) -> frozenset[MessageClass]:
        """The message classes this policy, with its options, drops for a suppressed address
        (empty: it honours none, e.g. every class is exempt)."""
        ...


class PolicyContext:
    """A read-only view of the store for policies, at one moment in time."""

    def __init__(
        self,
        store: PolicyReads,
        now: datetime,
        contents: Mapping[str, bytes] | None = None,
        *,
        history_span: timedelta | None = None,
        events_span: timedelta | None = None,
        copies: CopyQuery | None = None,
    ) -> None:
        self._store = store
        self.now = now
        """The time of this decision, the same for every policy judging the delivery."""
        self.now_micros = micros(now)
        """`now` in integer microseconds since the epoch (`sendguard.recipient.micros`), for
        `send_micros_now` and `sends_now`: `now_micros - w` is `now - w` (`w` a span in
        microseconds), the clock's time being UTC."""
        # At intake the message is judged before it is committed: its content is given here.
        self._contents = contents or {}
        # Several policies (and the kill switch) ask about the same campaign in one decision.
        self._campaigns: dict[str, Campaign | None] = {}
        self._zones: dict[str, ZoneInfo | None] = {}
        # What the policies read about a recipient, read at once (one statement in the SQL
        # stores) when the first of them asks, and shared: the sends over `history_span` and
        # the events over `events_span` (the longest any configured policy reads of each),
        # the suppression and the time zone fact. Caps, repetition and fatigue all count the
        # same sends. Read inside the recipient's lock, as each read was before.
        self._history_from = None if history_span is None else now - history_span
        # (one time when the spans are one, as with the built-in policies: fatigue reads both
        # over its `lookback`; the store then converts it once)
        self._events_from = (
            self._history_from
            if events_span == history_span
            else None
            if events_span is None
            else now - events_span
        )
        # The same in microseconds, for the reads on the rows' microseconds; None (they read
        # nothing) for a time whose zone is not a fixed offset: `now - span` is then counted
        # on the wall clock, and `now_micros - span` would not always be it.
        self._history_from_us = (
            self.now_micros - _span_micros(history_span)
            if history_span is not None and isinstance(now.tzinfo, timezone)
            else None
        )
        # Earlier copies of the message (the engine's resend check), read with the rest.
        self._copies = copies
        self._reads: dict[str, RecipientReads] = {}
        # The address asked about last and its reads: every policy asks about the delivery's
        # recipient, in the very string the delivery holds (no key worked out each time).
        self._last: tuple[str, RecipientReads] | None = None

    async def _recipient(self, recipient: str) -> RecipientReads:
        """The reads about `recipient`: asked of the store the first time only. Each caller
        first looks at `_last` itself (the address asked about last, its reads): that test
        costs less than making this coroutine, and every policy asks about the delivery's
        own recipient several times a decision."""
        key = recipient_key(recipient)
        found = self._reads.get(key)
        if found is None:
            if self._copies is None:  # a store written before copies were asked answers too
                found = await self._store.recipient_reads(
                    key, history_since=self._history_from, events_since=self._events_from
                )
            else:
                found = await self._store.recipient_reads(
                    key,
                    history_since=self._history_from,
                    events_since=self._events_from,
                    copies=self._copies,
                )
            self._reads[key] = found
        self._last = (recipient, found)
        return found

    async def recipient(self, recipient: str) -> None:
        """Read what the policies read about `recipient` now (the engine does, before the
        first policy), unless it was read in this decision."""
        last = self._last  # `_known`, written out: the engine asks once per decision
        if last is None or last[0] is not recipient:
            await self._recipient(recipient)

    async def earlier_copy(self, recipient: str) -> Copy | None:
        """The first delivery to `recipient` of an earlier copy of the message being decided
        (the `copies` this context looks for), if any: the engine's resend check."""
        if self._copies is None:
            return None
        reads = self._known(recipient) or await self._recipient(recipient)
        return reads.copies[0] if reads.copies else None

    def _known(self, recipient: str) -> RecipientReads | None:
        """The reads about `recipient` if it is the address asked about last (no coroutine)."""
        last = self._last
        return last[1] if last is not None and last[0] is recipient else None

    def _covers(self, since: datetime) -> bool:
        """Whether the shared read of the sends (over `history_span`) holds all since `since`."""
        return self._history_from is not None and since >= self._history_from

    def _sends_since(self, recipient: str, since: int) -> Sequence[HistoryEntry] | None:
        """The shared read's sends of `recipient`, if they hold all since `since`
        (microseconds); else None."""
        last = self._last
        start = self._history_from_us
        if last is None or last[0] is not recipient or start is None or since < start:
            return None
        return last[1].history

    def reads_now(self, recipient: str) -> RecipientReads | None:
        """What this decision read about `recipient`, if it is the address read last (the
        delivery's recipient, in the very string the delivery holds: the engine reads it
        before the first policy); None otherwise. Reads nothing."""
        last = self._last
        return last[1] if last is not None and last[0] is recipient else None

    def history_now(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry] | None:
        """`history` without awaiting, if the shared read holds the answer; else None."""
        last = self._last
        if last is None or last[0] is not recipient or not self._covers(since):
            return None
        return _since(last[1].history, since, campaign)

    def send_times_now(
        self,
        since: datetime,
        *,
        recipient: str,
        campaign: str | None = None,
        exclude_classes: Sequence[MessageClass] = (),
        limit: int = 100,
    ) -> Sequence[datetime] | None:
        """`send_times` of one recipient without awaiting, if the shared read holds the
        answer; else None."""
        last = self._last
        if last is None or last[0] is not recipient or not self._covers(since):
            return None
        return _times(last[1].history, since, campaign, exclude_classes, limit)

    def send_micros_now(
        self,
        since: int,
        *,
        recipient: str,
        campaign: str | None = None,
        exclude_classes: Sequence[MessageClass] = (),
        limit: int = 100,
    ) -> Sequence[int] | None:
        """`send_times_now` in integer microseconds since the epoch, `since` too (count back
        from `now_micros`): no `datetime` is made (`sendguard.clock.from_micros` makes one)."""
        history = self._sends_since(recipient, since)
        if history is None:
            return None
        if isinstance(history, SendRows):
            return history.times(since, campaign, exclude_classes, limit)
        times = _times(history, from_micros(since), campaign, exclude_classes, limit)
        return [micros(t) for t in times]

    def sends_now(self, recipient: str, since: int) -> Sequence[SendRow] | None:
        """The sends `history_now` would answer since `since` (microseconds: count back from
        `now_micros`), as rows (`sendguard.recipient.SendRow`: no HistoryEntry, no
        `datetime`), oldest first; None as `history_now`."""
        history = self._sends_since(recipient, since)
        if history is None:
            return None
        if isinstance(history, SendRows):
            return history.after(since)
        return [send_row(h) for h in _since(history, from_micros(since), None)]

    def events_now(self, recipient: str, since: datetime | None = None) -> Sequence[Event] | None:
        """`events` without awaiting, if the shared read holds the answer; else None."""
        last = self._last
        if (
            last is None
            or last[0] is not recipient
            or self._events_from is None
            or since is None
            or since < self._events_from
        ):
            return None
        events = last[1].events
        return [e for e in events if e.at >= since] if events else []

    def campaign_now(self, name: str) -> Campaign | Literal[Unread.UNREAD] | None:
        """`campaign` without awaiting, if this decision read it (the engine reads the
        delivery's campaign before the first policy); else UNREAD."""
        return self._campaigns.get(name, UNREAD)

    def recipient_zone_now(self, delivery: Delivery) -> ZoneInfo | Literal[Unread.UNREAD] | None:
        """`recipient_zone` without awaiting, if nothing needs reading; else UNREAD."""
        zones = self._zones
        if delivery.id in zones:
            return zones[delivery.id]
        reads = None
        if delivery.message.fields.timezone is None:
            reads = self.reads_now(delivery.recipient)
            if reads is None:
                return UNREAD
        return self._zone(delivery, reads)

    async def fact(self, key: str, contact: str | None = None) -> Fact | None:
        """The latest fact for `key` about `contact` (or without a contact)."""
        return await self._store.get_fact(key, contact)

    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        """Sends reserved or made to `recipient` since `since` (optionally of one campaign)."""
        if not self._covers(since):
            return await self._store.history(recipient, since, campaign=campaign)
        recent = (self._known(recipient) or await self._recipient(recipient)).history
        return _since(recent, since, campaign)

    async def send_times(
        self,
        since: datetime,
        *,
        recipient: str | None = None,
        domain: str | None = None,
        campaign: str | None = None,
        exclude_classes: Sequence[MessageClass] = (),
        limit: int = 100,
    ) -> Sequence[datetime]:
        """When sends were reserved since `since` (newest first, at most `limit`)."""
        if recipient is not None and domain is None and self._covers(since):
            recent = (self._known(recipient) or await self._recipient(recipient)).history
            return _times(recent, since, campaign, exclude_classes, limit)
        return await self._store.send_times(
            since,
            recipient=recipient,
            domain=domain,
            campaign=campaign,
            exclude_classes=exclude_classes,
            limit=limit,
        )

    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        """Engagement and suppression events about `recipient`."""
        if self._events_from is None or since is None or since < self._events_from:
            return await self._store.events(recipient, since)
        recent = (self._known(recipient) or await self._recipient(recipient)).events
        return [e for e in recent if e.at >= since]

    async def suppression(self, recipient: str) -> Suppression | None:
        """The durable suppression of `recipient` (unsubscribe, complaint, bounce, ...)."""
        return (self._known(recipient) or await self._recipient(recipient)).suppression

    async def campaign(self, name: str) -> Campaign | None:
        """What reviewers decided about campaign `name`."""
        if name not in self._campaigns:
            self._campaigns[name] = await self._store.get_campaign(name)
        return self._campaigns[name]

    async def recipient_zone(self, delivery: Delivery) -> ZoneInfo | None:
        """The recipient's time zone: the message's `X-Sendguard-Timezone`, else a `timezone`
        fact about the recipient, else None (unknown). A fact naming no valid zone is ignored."""
        if delivery.id not in self._zones:
            reads = None
            if delivery.message.fields.timezone is None:
                reads = self._known(delivery.recipient) or await self._recipient(delivery.recipient)
            return self._zone(delivery, reads)
        return self._zones[delivery.id]

    def _zone(self, delivery: Delivery, reads: RecipientReads | None) -> ZoneInfo | None:
        """The zone of `recipient_zone` (kept for the delivery), from the message's field or
        else from `reads` (the recipient's, read)."""
        name = delivery.message.fields.timezone
        if name is None and reads is not None:
            fact = reads.timezone
            name = fact.value if fact is not None else None
        zone = None
        if name:
            try:
                zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
        self._zones[delivery.id] = zone
        return zone

    async def campaign_volume(
        self, name: str, since: datetime, *, at_most: int | None = None
    ) -> int:
        """How many deliveries of campaign `name` were accepted since `since` (counting stops
        at `at_most` when given: ask for no more than a threshold needs)."""
        return await self._store.count_campaign(name, since, at_most=at_most)

    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        """The contents reviewers approved for `campaign`, newest approval first."""
        return await self._store.approvals(campaign)

    async def content_volume(
        self,
        content_hash: str,
        *,
        since: datetime | None = None,
        campaign: str | None = None,
        before: str | None = None,
        exclude_message: str | None = None,
        at_most: int | None = None,
    ) -> int:
        """How many deliveries of messages with this content fingerprint exist (created since
        `since`, of `campaign`, created before delivery `before`, not of `exclude_message`;
        counting stops at `at_most` when given)."""
        return await self._store.count_content(
            content_hash,
            since=since,
            campaign=campaign,
            before=before,
            exclude_message=exclude_message,
            at_most=at_most,
        )

    async def content(self, message_id: str) -> bytes:
        """The content of a message (headers and body), for policies that read it."""
        if message_id in self._contents:
            return self._contents[message_id]
        return await self._store.message_content(message_id)


@lru_cache(maxsize=64)
def _span_micros(span: timedelta) -> int:
    """`span` in microseconds (a few spans, one per config: kept)."""
    return span // _MICROSECOND


_MICROSECOND = timedelta(microseconds=1)


def _since(
    recent: Sequence[HistoryEntry], since: datetime, campaign: str | None
) -> list[HistoryEntry]:
    """The sends of `recent` since `since` (of `campaign`, if given)."""
    if isinstance(recent, SendRows):  # entries made for those sends only
        return recent.since(micros(since), campaign)
    return [h for h in recent if h.at >= since and (campaign is None or h.campaign == campaign)]


def _times(
    recent: Sequence[HistoryEntry],
    since: datetime,
    campaign: str | None,
    exclude_classes: Sequence[MessageClass],
    limit: int,
) -> list[datetime]:
    """When the sends of `recent` (oldest first) since `since` were reserved, newest first, at
    most `limit` (of `campaign`, not of `exclude_classes`)."""
    if isinstance(recent, SendRows):  # a datetime made for those sends only
        return [
            from_micros(t) for t in recent.times(micros(since), campaign, exclude_classes, limit)
        ]
    times: list[datetime] = []
    for h in reversed(recent):
        if h.at < since or len(times) == limit:
            break
        if (campaign is None or h.campaign == campaign) and (
            h.message_class not in exclude_classes
        ):
            times.append(h.at)
    return times


class PolicyLoadError(Exception):
    """A configured policy cannot be found or does not follow the contract."""


def installed_policies() -> dict[str, EntryPoint]:
    """Every policy registered under the entry point group, by name. Each call reads the
    entry points of every installed distribution (a hundred in a test environment: about
    2 % of a server start), so a caller that loads several policies asks once."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_policy_class(name: str, installed: Mapping[str, EntryPoint] | None = None) -> type[Policy]:
    """The class registered as `name` (among `installed`, what `installed_policies()`
    returned, when the caller has it); PolicyLoadError says what is wrong and what exists."""
    available = installed_policies() if installed is None else installed
    if name not in available:
        known = ", ".join(sorted(available)) or "none"
        raise PolicyLoadError(f"no policy named {name!r} is installed; installed: {known}")
    try:
        cls = available[name].load()
    except Exception as exc:  # a broken plugin must be reported, whatever it raises
        raise PolicyLoadError(f"policy {name!r} failed to import: {exc}") from exc
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PolicyLoadError(f"policy {name!r} has no pydantic `Options` model")
    if options.model_config.get("extra") != "forbid":
        # A misspelt option would otherwise be ignored without a word.
        raise PolicyLoadError(
            f"policy {name!r}: its `Options` must forbid unknown keys "
            "(derive it from sendguard.policy.PolicyOptions)"
        )
    if not inspect.iscoroutinefunction(getattr(cls, "evaluate", None)):
        raise PolicyLoadError(f"policy {name!r} has no `async def evaluate(delivery, ctx)`")
    policy_class: type[Policy] = cls
    return policy_class
