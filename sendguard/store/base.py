"""The store contract: everything sendguard keeps, behind one small async interface.

Every backend (SQLite, PostgreSQL) implements `Store` and passes the same contract tests in
`tests/contract/`. Nothing backend-specific appears above this module. Times are
timezone-aware datetimes; a backend may keep them however it likes.

Rules every backend enforces, so the callers need not:
- `add_message` commits the message, its deliveries and their decisions atomically.
- Entering `queued` reserves the send in the recipient's history (caps count decisions, not
  only sends); entering `sent` confirms it; entering `dropped` or `failed` releases it.
- A claimed delivery belongs to its claim's owner until the lease ends; a change that names an
  owner fails with `Conflict` if the claim was lost.
- An aggregate or scan (`count_by_state`, `campaigns`, listings, `delivery_records`) never
  runs on the event loop's thread, however large the tables: it must not stall every SMTP
  session and HTTP request. Only point reads may (see `sql_store.py`).
- A write that fails, whatever it raises, fails alone; a store that can no longer write
  raises StoreUnavailable at once (from writes and `check`), never leaves a caller waiting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sendguard.message import (
    Delivery,
    DeliveryState,
    HoldOrigin,
    Message,
    MessageClass,
    Transition,
)
from sendguard.verdict import Decision, PolicyOutcome


@dataclass(frozen=True)
class NewDelivery:
    """A delivery as the ingress decided it, ready to be committed with its message."""

    id: str
    recipient: str
    state: DeliveryState
    reason: str
    decision: Decision
    due_at: datetime | None = None
    hold_origin: HoldOrigin | None = None


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to a request that carried an `Idempotency-Key`."""

    key: str
    message_id: str
    response: bytes
    reusable_before: datetime | None = None
    """An earlier use of the key older than this has expired and may be replaced."""
    fingerprint: str | None = None
    """A digest of the request the key was first used with: another request under the same
    key is refused (422), not answered with this response."""


@dataclass(frozen=True)
class Change:
    """A state change of one delivery, with the guards that make it safe under concurrency."""

    to: DeliveryState
    reason: str
    at: datetime
    expect: frozenset[DeliveryState] | None = None
    """The change applies only if the delivery is in one of these states (else `Conflict`)."""
    owner: str | None = None
    """The change applies only if this owner still holds the claim (else `Conflict`)."""
    due_at: datetime | None = None
    error: str | None = None
    decision: Decision | None = None
    """Policy outcomes to record with the change (a re-evaluation)."""
    attempt: bool = False
    """Count this change as an attempt to send (entering `sending`)."""
    keep_claim: bool = False
    """Keep the owner's claim (entering `sending` always keeps it)."""
    approved_by: str | None = None
    """A reviewer released the delivery; kept from then on."""
    hold_origin: HoldOrigin | None = None
    """With `to=held`: why (a policy's verdict by default)."""
    override_by: str | None = None
    """A reviewer approved a delivery the context policy held: an override of its premises,
    kept from then on."""


@dataclass(frozen=True)
class RecordedOutcome:
    """A policy outcome as kept with a delivery, with when it was decided."""

    at: datetime
    outcome: PolicyOutcome


@dataclass(frozen=True)
class DeliveryRecord:
    """What happened to one delivery: every state it went through and every policy outcome
    recorded for it, oldest first."""

    transitions: Sequence[Transition] = ()
    outcomes: Sequence[RecordedOutcome] = ()


@dataclass(frozen=True)
class HistoryEntry:
    """A send reserved or made to a recipient; what caps and repetition count."""

    delivery_id: str
    recipient: str
    campaign: str | None
    message_class: MessageClass
    content_hash: str | None
    at: datetime
    sent: bool
    offer: str | None = None
    """The offer the message made (`X-Sendguard-Offer`), if it named one."""


@dataclass(frozen=True)
class Fact:
    """Context from outside (CRM, calendar): `key` holds `value`, optionally for one contact."""

    key: str
    value: str
    observed_at: datetime
    contact: str | None = None
    superseded_by: str | None = None
    """The fact that replaces this one (a rescheduled meeting's new meeting): a full key, or
    the key's leading part (`meeting:8830` for `meeting:8812:status`), see `successor`."""

    @property
    def successor(self) -> str | None:
        """The key that premises on this fact follow, if it was superseded.

        `superseded_by` with fewer `:`-separated parts than `key` names the successor entity;
        the key's remaining trailing parts are kept: `meeting:8812:status` superseded by
        `meeting:8830` is followed to `meeting:8830:status`.
        """
        if not self.superseded_by:
            return None
        parts, given = self.key.split(":"), self.superseded_by.split(":")
        if len(given) >= len(parts):
            return self.superseded_by
        return ":".join(given + parts[len(given) :])


class EventType(StrEnum):
    """Engagement and suppression events about a recipient."""

    OPEN = "open"
    CLICK = "click"
    REPLY = "reply"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    PURCHASE = "purchase"
    RESUBSCRIBE = "resubscribe"
    DELIVERED = "delivered"


def event_type(name: str) -> EventType | str:
    """A built-in type as its enum member; a configured custom type (`visit`) as it is."""
    try:
        return EventType(name)
    except ValueError:
        return name


@dataclass(frozen=True)
class Event:
    """Something a recipient did (or that happened to their address).

    `type` is an `EventType`, or a custom engagement type a configured policy reads.
    """

    type: EventType | str
    recipient: str
    at: datetime
    message_id: str | None = None
    offer: str | None = None
    """What a `purchase` bought (an offer name as in `X-Sendguard-Offer`)."""


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


@dataclass(frozen=True)
class PruneCutoffs:
    """Per kind of record, what is older than the cutoff may be forgotten; None keeps all.

    Suppressions have no cutoff: they are never pruned.
    """

    deliveries: datetime | None
    """Finished deliveries (updated before it) with their transitions and outcomes; messages
    left without deliveries (received before it)."""
    history: datetime | None
    events: datetime | None
    facts: datetime | None
    idempotency: datetime | None

    @classmethod
    def uniform(cls, before: datetime) -> PruneCutoffs:
        """The same cutoff for everything."""
        return cls(before, before, before, before, before)


class Approval(StrEnum):
    """A reviewer's word on a whole campaign."""

    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Campaign:
    """What reviewers decided about a campaign."""

    name: str
    approval: Approval | None = None
    paused: bool = False
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(frozen=True)
class ContentApproval:
    """A reviewer approved this content (fingerprint) of a campaign: it may flow unreviewed."""

    campaign: str
    content_hash: str
    approved_by: str
    approved_at: datetime


@dataclass(frozen=True)
class GlobalPause:
    """The global kill switch: while `paused`, every unsent delivery is held."""

    paused: bool = False
    updated_at: datetime | None = None
    updated_by: str | None = None
    note: str = ""


@dataclass(frozen=True)
class CampaignSummary:
    """A campaign's review state with how many of its deliveries are in each state."""

    campaign: Campaign
    counts: dict[DeliveryState, int]


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which deliveries or campaign, when, and why."""

    at: datetime
    actor: str
    action: str
    target: str
    note: str = ""
    count: int = 0
    id: int | None = None


@dataclass(frozen=True)
class DeliveryQuery:
    """Filters for listing deliveries; results come newest first, `after` is the cursor."""

    state: DeliveryState | None = None
    campaign: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    after: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class DeliveryPage:
    """One page of a delivery listing; `next` is the cursor for the following page."""

    deliveries: Sequence[Delivery]
    next: str | None = None


@dataclass(frozen=True)
class StoreStats:
    """Counters a backend keeps about itself (for tests and the benchmark)."""

    writes: int = 0
    commits: int = 0


class LifecycleEvent(StrEnum):
    """A delivery state change an outbound webhook can subscribe to."""

    FORWARDED = "forwarded"
    """Queued to be sent now."""
    DELAYED = "delayed"
    """Waiting (a cap, a premise, a schedule) until a time or a fact."""
    HELD = "held"
    """In the review queue (or held by a kill switch)."""
    DROPPED = "dropped"
    """Will never be sent."""
    RELEASED = "released"
    """Out of the review queue or a pause: judged again now."""
    DELIVERED = "delivered"
    """The upstream accepted it."""
    FAILED = "failed"
    """The upstream refused it for good, or it expired."""
    BOUNCED = "bounced"
    """A bounce was reported for it (`POST /v1/events`, type `bounce`, with its message id)."""


def lifecycle_event(previous: DeliveryState | None, state: DeliveryState) -> LifecycleEvent | None:
    """The webhook event a move from `previous` (None: a new delivery) to `state` is, if any.

    `sending` and `deferred` are the dispatcher's business, not a change a tool acts on; a
    delayed delivery judged again and still delayed is no change either.
    """
    if state is DeliveryState.DELAYED:
        if previous is DeliveryState.HELD:
            return LifecycleEvent.RELEASED
        return None if previous is DeliveryState.DELAYED else LifecycleEvent.DELAYED
    if state is previous:
        return None
    return _EVENT_OF.get(state)


_EVENT_OF = {
    DeliveryState.QUEUED: LifecycleEvent.FORWARDED,
    DeliveryState.HELD: LifecycleEvent.HELD,
    DeliveryState.DROPPED: LifecycleEvent.DROPPED,
    DeliveryState.SENT: LifecycleEvent.DELIVERED,
    DeliveryState.FAILED: LifecycleEvent.FAILED,
}


@dataclass(frozen=True)
class WebhookTarget:
    """An outbound webhook as the store sees it: its name (the URL) and the events it wants."""

    name: str
    events: frozenset[LifecycleEvent]


@dataclass(frozen=True)
class OutboundEvent:
    """A lifecycle event waiting in the outbox to be posted to one webhook target."""

    id: int
    target: str
    delivery_id: str
    event: LifecycleEvent
    payload: str
    """The event as JSON, without its `id` (the sender adds it)."""
    created_at: datetime
    attempts: int


@dataclass(frozen=True)
class ShadowExample:
    """One delivery a shadow policy would have treated otherwise than forward."""

    delivery_id: str
    recipient: str
    campaign: str | None
    verdict: str
    reason: str
    at: datetime
    until: datetime | None = None


@dataclass(frozen=True)
class ShadowTally:
    """What one shadow policy said in a window: verdict counts (forwards included), the
    latest examples of each other verdict, and the recipients it would have affected most."""

    policy: str
    counts: dict[str, int]
    examples: Sequence[ShadowExample]
    recipients: Sequence[tuple[str, int]]


@dataclass(frozen=True)
class QueueAges:
    """How long the oldest work has waited (for alerts): None when there is none."""

    oldest_held_since: datetime | None
    """When the longest-held delivery (held by a policy, not a pause) was held."""
    oldest_due_at: datetime | None
    """The earliest due time among deliveries waiting to be sent or judged again."""


class Store(ABC):
    """Everything sendguard keeps. See the module docstring for the rules every backend enforces."""

    # lifecycle -----------------------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema to the current version, start background work."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release every resource."""

    @abstractmethod
    async def check(self) -> None:
        """Raise StoreUnavailable unless the store can serve requests now (readiness)."""

    @abstractmethod
    async def recover(self, now: datetime) -> int:
        """Make work abandoned by a crashed process claimable again; return how many."""

    @property
    @abstractmethod
    def stats(self) -> StoreStats:
        """Counters about this store's own work."""

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` when another process made work due now (a shared store only)."""
        del callback

    # serialisation ---------------------------------------------------------------------------
    @abstractmethod
    def lock_recipients(self, recipients: Sequence[str]) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive section for these recipient keys while deciding and committing.

        Caps are checked and reserved inside this section, so concurrent messages to one
        person (on any instance sharing the store) are decided one after the other.
        """

    # messages --------------------------------------------------------------------------------
    @abstractmethod
    async def add_message(
        self,
        message: Message,
        content: bytes,
        deliveries: Sequence[NewDelivery],
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        """Commit a message, its content and its deliveries in one transaction.

        With `idempotency`, raise Conflict if that key was already used.
        """

    @abstractmethod
    async def get_message(self, message_id: str) -> Message | None:
        """The message without its content, or None."""

    @abstractmethod
    async def message_content(self, message_id: str) -> bytes:
        """The stored content of a message (raises Conflict if there is none)."""

    @abstractmethod
    async def idempotent_response(self, key: str, since: datetime) -> IdempotencyRecord | None:
        """The first answer given for `key`, if it was given after `since`."""

    # deliveries ------------------------------------------------------------------------------
    @abstractmethod
    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery, or None."""

    @abstractmethod
    async def deliveries_of(self, message_id: str) -> Sequence[Delivery]:
        """Every delivery of a message, in recipient order, with those a reviewer's edit
        moved to an edited copy of it (`edits`)."""

    @abstractmethod
    async def list_deliveries(self, query: DeliveryQuery) -> DeliveryPage:
        """Deliveries matching `query`, newest first, paginated."""

    @abstractmethod
    async def transitions(self, delivery_id: str) -> Sequence[Transition]:
        """Every state a delivery went through, oldest first."""

    @abstractmethod
    async def outcomes(self, delivery_id: str) -> Sequence[RecordedOutcome]:
        """Every policy outcome recorded for a delivery, oldest first."""

    @abstractmethod
    async def delivery_records(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryRecord]:
        """The transitions and outcomes of many deliveries at once, by delivery id.

        Every id asked for is in the answer (an unknown one with an empty record). The number
        of statements does not grow with the number of ids (up to a page of 500), so listing
        a page costs the same few queries however long it is.
        """

    @abstractmethod
    async def wake_waiting(
        self,
        now: datetime,
        *,
        fact_key: str | None = None,
        recipient: str | None = None,
        contact: str | None = None,
        held: bool = False,
    ) -> int:
        """Make deliveries that wait on `fact_key`, or are to `recipient`, due now.

        Delayed deliveries whose message requires `fact_key` (or whose last decision said it
        waits on it, `Verdict.wakes_on`) become due now. Deliveries held by a policy (not a
        pause) whose last decision waits on `fact_key` move to `delayed`, due now, with a
        transition saying so. With `contact`, only deliveries to that recipient key wake
        through `wakes_on`. With `held` (the recipient was just suppressed), deliveries a
        policy held for `recipient` are judged again too, so a reviewer never sees mail to
        someone who has opted out. They are judged again at once by the dispatcher; return how
        many were woken.
        """

    @abstractmethod
    async def count_by_state(self) -> dict[DeliveryState, int]:
        """How many deliveries are in each state."""

    # work ------------------------------------------------------------------------------------
    @abstractmethod
    async def claim_due(
        self,
        now: datetime,
        owner: str,
        limit: int,
        lease: timedelta,
        *,
        send_within: timedelta | None = None,
    ) -> Sequence[Delivery]:
        """Claim up to `limit` deliveries that are due, for `owner`, until `now + lease`.

        Due: queued, delayed, deferred or held with `due_at <= now` (a held delivery has a due
        time only while its review may expire), or sending with an expired lease.
        A delivery is never claimed by two owners at once.

        With `send_within`, each claimed delivery that may be sent now (queued, deferred or
        left sending, first attempted no longer than `send_within` ago) is also marked
        `sending` in the same write: its attempt counted and recorded as a transition
        ("attempt N"), as `change` to `sending` would.
        """

    @abstractmethod
    async def release(self, delivery_ids: Sequence[str], owner: str) -> None:
        """Give up claims that were not worked on (on shutdown)."""

    @abstractmethod
    async def next_due_at(self) -> datetime | None:
        """When the next waiting delivery becomes due, if any."""

    @abstractmethod
    async def change(self, delivery_id: str, change: Change) -> Delivery:
        """Apply a state change; raise Conflict if its guards do not hold."""

    # what policies read ----------------------------------------------------------------------
    @abstractmethod
    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        """Sends reserved or made to `recipient` (a recipient key) since `since`, oldest first."""

    @abstractmethod
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
        """When sends were reserved since `since`, newest first, at most `limit` of them.

        Filtered by recipient key, recipient domain and campaign when given (what frequency
        caps count); classes in `exclude_classes` are not counted.
        """

    @abstractmethod
    async def put_fact(self, fact: Fact) -> None:
        """Record a fact; a newer observation of the same key and contact replaces an older one."""

    @abstractmethod
    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        """The latest fact for `key` (for `contact`, else the contact-less one)."""

    @abstractmethod
    async def add_event(self, event: Event) -> None:
        """Record an engagement or suppression event."""

    @abstractmethod
    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        """Events about a recipient key, oldest first."""

    @abstractmethod
    async def get_campaign(self, name: str) -> Campaign | None:
        """What reviewers decided about a campaign, if anything."""

    @abstractmethod
    async def set_campaign(self, campaign: Campaign) -> None:
        """Record a campaign's approval or pause state."""

    @abstractmethod
    async def count_campaign(self, name: str, since: datetime) -> int:
        """How many deliveries of campaign `name` were created since `since`."""

    @abstractmethod
    async def campaigns(self) -> Sequence[CampaignSummary]:
        """Every campaign that has deliveries or a review state, by name."""

    @abstractmethod
    async def prune(self, before: datetime | PruneCutoffs) -> int:
        """Forget what is older than `before` (one cutoff, or one per kind of record):
        finished deliveries with their transitions and outcomes, messages left without
        deliveries, send history, events, facts and idempotency keys. Waiting and held
        deliveries, suppressions and the audit log are kept. Return how many deliveries went."""

    # suppressions ----------------------------------------------------------------------------
    @abstractmethod
    async def add_suppressions(
        self, suppressions: Sequence[Suppression], at: datetime
    ) -> Sequence[bool]:
        """Suppress each address unless it already is; per item, whether it was added.

        Each one added is audited at `at` (`suppress`, target `suppression:<address key>`, by
        its `created_by`) in the same transaction; an existing suppression is left unchanged.
        `created_at` may be older than `at` (an import keeps the ESP's date).
        """

    @abstractmethod
    async def get_suppression(self, address: str) -> Suppression | None:
        """The suppression of `address` (compared as a recipient key), if any."""

    @abstractmethod
    async def list_suppressions(self, query: SuppressionQuery) -> SuppressionPage:
        """Suppressions matching `query`, by address key, paginated."""

    @abstractmethod
    async def lift_suppression(
        self,
        address: str,
        actor: str,
        at: datetime,
        note: str = "",
        *,
        made_by: datetime | None = None,
    ) -> Suppression | None:
        """Remove the suppression of `address` and audit it (`lift`); None if there was none.

        With `made_by`, only a suppression created at or before that moment is lifted (a
        resubscribe that happened before the unsubscribe must not undo it): None otherwise.
        """

    # approvals and the global pause ----------------------------------------------------------
    @abstractmethod
    async def add_approvals(self, approvals: Sequence[ContentApproval]) -> None:
        """Record that these campaign contents were approved (a newer approval of the same
        campaign and content replaces the older one)."""

    @abstractmethod
    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        """The contents approved for `campaign`, newest approval first."""

    @abstractmethod
    async def count_content(
        self,
        content_hash: str,
        *,
        since: datetime | None = None,
        campaign: str | None = None,
        before: str | None = None,
        exclude_message: str | None = None,
    ) -> int:
        """How many deliveries of messages with this content fingerprint exist.

        Filtered by creation time (`since`), campaign, deliveries created before the delivery
        id `before`, and leaving out the deliveries of message `exclude_message`.
        """

    @abstractmethod
    async def get_pause(self) -> GlobalPause:
        """The global kill switch's state (not paused if it was never set)."""

    @abstractmethod
    async def set_pause(self, pause: GlobalPause) -> None:
        """Record the global kill switch's state durably."""

    # audit -----------------------------------------------------------------------------------
    @abstractmethod
    async def add_audit(self, entry: AuditEntry) -> None:
        """Append to the audit log."""

    @abstractmethod
    async def audit(self, limit: int = 100) -> Sequence[AuditEntry]:
        """The latest audit entries, newest first."""

    # outbound webhooks -----------------------------------------------------------------------
    def set_webhook_targets(self, targets: Sequence[WebhookTarget]) -> None:
        """From now on, write an outbox row for each target that wants a state change, in the
        same transaction as the change (so an event is never lost nor sent for a change that
        was rolled back)."""
        del targets

    @abstractmethod
    async def claim_webhook_events(
        self, now: datetime, owner: str, limit: int, lease: timedelta
    ) -> Sequence[OutboundEvent]:
        """Claim up to `limit` due outbox rows for `owner` until `now + lease`, oldest first.

        Only the oldest pending row of each (target, delivery) is ever claimable, so the
        events of one delivery reach a target in order, each after the one before succeeded.
        """

    @abstractmethod
    async def webhook_event_done(self, event_id: int) -> None:
        """Forget a row: it was delivered (or given up on)."""

    @abstractmethod
    async def webhook_event_retry(self, event_id: int, next_at: datetime, error: str) -> None:
        """Count a failed attempt and make the row due again at `next_at`."""

    @abstractmethod
    async def pending_webhook_events(self) -> int:
        """How many outbox rows wait to be delivered."""

    # shadow report ---------------------------------------------------------------------------
    @abstractmethod
    async def shadow_tallies(
        self, since: datetime, *, examples: int = 5, top: int = 10
    ) -> Sequence[ShadowTally]:
        """Per policy that gave shadow verdicts since `since` (by name): counts per verdict,
        the latest `examples` deliveries per verdict other than forward, and the `top`
        recipients with the most such verdicts. An aggregate: never on the event loop."""

    @abstractmethod
    async def queue_ages(self) -> QueueAges:
        """The oldest held and the earliest due delivery (an aggregate: off the event loop)."""

    # review queue, edits, reviewer notices -------------------------------------------------
    @abstractmethod
    async def held_queue(self, query: HeldQuery) -> HeldQueue:
        """The held deliveries matching `query`, aggregated per campaign in the store, and
        the page `offset`/`limit` of them. The policy filter is evaluated in the store too,
        so the cost does not grow with a per-delivery look-up."""

    @abstractmethod
    async def add_edit(self, edit: Edit, message: Message, content: bytes) -> Edit:
        """Apply a reviewer's edit in one transaction: store `content` as the new message
        `edit.edited_message_id` (the corrected message's envelope and fields, with
        `message`'s headers, size and content fingerprint), move the held deliveries of
        `edit.message_id` in `edit.campaign` that no worker has claimed to it, and record the
        edit (the caller audits the reviewer's action, which may edit several messages).
        Return the edit with its `count`; raise Conflict, changing nothing, if none of them is
        held any more."""

    @abstractmethod
    async def edits(self, campaign: str) -> Sequence[Edit]:
        """The edits of a campaign, newest first."""

    @abstractmethod
    async def edit_making(self, message_id: str) -> Edit | None:
        """The edit that made message `message_id`, if an edit did."""

    @abstractmethod
    async def review_notices(self) -> Sequence[ReviewNotice]:
        """Every campaign whose holds were noticed and not yet all reviewed."""

    @abstractmethod
    async def notice_held(
        self, campaigns: Sequence[str | None], at: datetime
    ) -> Sequence[str | None]:
        """Note that these campaigns have held deliveries; return those that had none noted
        before (first held), at most once across every instance sharing the store."""

    @abstractmethod
    async def notice_sent(self, campaign: str | None, at: datetime) -> None:
        """The reviewers were told that `campaign` is held."""

    @abstractmethod
    async def forget_notices(self, keep: Sequence[str | None]) -> None:
        """Forget the notices of every campaign but `keep` (nothing of them is held any more):
        when one is held again, that is a first hold again."""


# review: the held queue, edits before approval, reviewer notices -----------------------------


@dataclass(frozen=True)
class HeldQuery:
    """Filters and the page of the review queue (held deliveries, by campaign)."""

    campaign: str | None = None
    recipient: str | None = None
    policy: str | None = None
    """Only deliveries this policy holds in its latest decision (`pause`: held by a pause)."""
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True)
class HeldGroup:
    """The held deliveries of one campaign (`None`: of no campaign) matching a query."""

    campaign: str | None
    count: int
    oldest: datetime
    """When the longest-waiting of them last changed (was held)."""
    expires: datetime | None
    """When the first of them reaches its hold expiry, if any does."""


@dataclass(frozen=True)
class HeldQueue:
    """The review queue: every matching group, and one page of the matching deliveries in
    queue order (campaigns by name, no campaign last; newest first within a campaign)."""

    groups: Sequence[HeldGroup]
    deliveries: Sequence[Delivery]
    total: int
    reviewed: Sequence[Campaign] = ()
    """Every campaign reviewers decided something about (approved, rejected, paused)."""


class EditedPart(StrEnum):
    """What a reviewer may correct before approving."""

    SUBJECT = "subject"
    TEXT = "text"
    HTML = "html"


@dataclass(frozen=True)
class Edit:
    """A reviewer's correction of a held campaign message: the edited copy is a message of its
    own (`edited_message_id`), the message it corrects stays as it was."""

    id: str
    campaign: str
    message_id: str
    """The message that was corrected (itself an edited copy when edited twice)."""
    edited_message_id: str
    origin_message_id: str
    """The message as it was received: the first of a chain of edits."""
    actor: str
    at: datetime
    changed: tuple[EditedPart, ...]
    diff: str
    """A unified diff of what changed (subject, text part, HTML part)."""
    note: str = ""
    count: int = 0
    """How many held deliveries moved to the edited copy."""


@dataclass(frozen=True)
class ReviewNotice:
    """A campaign (`None`: mail of no campaign) that has held deliveries, since when, and
    whether the reviewers were told."""

    campaign: str | None
    held_at: datetime
    sent_at: datetime | None = None
