"""The store contract: everything sendguard keeps, behind small async role interfaces.

The contract is split into roles (`PolicyReads`, `IntakeWrites`, `WorkQueue`, `ReviewState`,
...), each a `Protocol` of the operations one kind of component needs; a component asks for the
narrowest role it uses (a policy sees `PolicyReads` only). A backend implements them all
together as a `Store`, registers under the `sendguard.stores` entry point group (see
`sendguard.store` and docs/stores.md), and passes the contract tests in `tests/contract/`.
The records the roles take and return live with their concepts (`sendguard.deliveries`,
`sendguard.events`, `sendguard.approvals`, ...), not here. Nothing backend-specific appears
above this module. Times are timezone-aware datetimes; a backend may keep them however it
likes.

Rules every backend enforces, so the callers need not:
- `add_message` commits the message, its deliveries and their decisions atomically.
- Entering `queued` reserves the send in the recipient's history (caps count decisions, not
  only sends); entering `sent` confirms it; entering `dropped` or `failed` releases it.
- A claimed delivery belongs to its claim's owner until the lease ends; a change that names an
  owner fails with `Conflict` if the claim was lost.
- An aggregate or scan (`count_by_state`, `campaigns`, listings, `delivery_records`) never
  runs on the event loop's thread, however large the tables: it must not stall every SMTP
  session and HTTP request. Only point reads may (see `sql_jobs.py`).
- A write that fails, whatever it raises, fails alone; a store that can no longer write
  raises StoreUnavailable at once (from writes and `check`), never leaves a caller waiting.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from sendguard.address import recipient_key
from sendguard.approvals import Campaign, CampaignSummary, ContentApproval, GlobalPause
from sendguard.audit import AuditEntry
from sendguard.deliveries import (
    Change,
    DeliveryPage,
    DeliveryQuery,
    DeliveryRecord,
    HistoryEntry,
    IdempotencyRecord,
    IntakeClaim,
    NewDelivery,
    NewMessage,
    RecordedOutcome,
)
from sendguard.esp_request import EspRequest
from sendguard.events import Event
from sendguard.facts import Fact
from sendguard.lifecycle import OutboundEvent, WebhookTarget
from sendguard.message import Delivery, DeliveryState, Message, MessageClass, Transition
from sendguard.pruning import PruneCutoffs
from sendguard.recipient import TIMEZONE_FACT, RecipientReads
from sendguard.reports import QueueAges, ShadowTally
from sendguard.resend import Copy, CopyQuery
from sendguard.review_queue import Edit, HeldQuery, HeldQueue, ReviewNotice
from sendguard.sign_ins import StoredSession, ThrottleKey
from sendguard.simulations import Simulation
from sendguard.suppressions import Suppression, SuppressionPage, SuppressionQuery

__all__ = [
    "Aggregates",
    "AuditLog",
    "ContextWrites",
    "DeliveryReads",
    "IntakeWrites",
    "PolicyReads",
    "Pruning",
    "ReviewState",
    "SignIns",
    "SimulationRuns",
    "Store",
    "StoreLifecycle",
    "SuppressionList",
    "WebhookOutbox",
    "WorkQueue",
]


class StoreLifecycle(Protocol):
    """Opening, closing and the health of the store itself."""

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

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` when another process made work due now (a shared store only)."""
        del callback


class PolicyReads(Protocol):
    """What a decision reads: policies (through `PolicyContext`) and the engine's kill
    switch. Point reads, cheap enough to run inline on the event loop."""

    @abstractmethod
    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        """The latest fact for `key` (for `contact`, else the contact-less one)."""

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
    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        """Events about a recipient key, oldest first."""

    @abstractmethod
    async def get_suppression(self, address: str) -> Suppression | None:
        """The suppression of `address` (compared as a recipient key), if any."""

    @abstractmethod
    async def earlier_copies(self, recipient: str, query: CopyQuery) -> Sequence[Copy]:
        """The deliveries to `recipient` (compared as a recipient key), in any state but
        `failed` (it reached nobody: a copy sent again is no double), of messages whose resend
        key (`NewDelivery.resend_key`) is `query.key`, created since `query.since`; oldest
        first. What the resend check reads (sendguard/resend.py)."""

    async def recipient_reads(
        self,
        recipient: str,
        *,
        history_since: datetime | None,
        events_since: datetime | None,
        copies: CopyQuery | None = None,
    ) -> RecipientReads:
        """What a decision reads about `recipient` (a recipient key), at once: its sends since
        `history_since` (as `history`), its events since `events_since` (as `events`), its
        suppression, its `timezone` fact, and with `copies` its deliveries of earlier copies
        of the message (as `earlier_copies`). A `None` leaves that kind out (empty).

        The SQL backends answer in one statement; this default asks each read in turn, so a
        backend that does not override it stays correct.
        """
        history = () if history_since is None else await self.history(recipient, history_since)
        events = () if events_since is None else await self.events(recipient, events_since)
        return RecipientReads(
            history,
            events,
            await self.get_suppression(recipient),
            await self.get_fact(TIMEZONE_FACT, recipient_key(recipient)),
            () if copies is None else tuple(await self.earlier_copies(recipient, copies)),
        )

    @abstractmethod
    async def get_campaign(self, name: str) -> Campaign | None:
        """What reviewers decided about a campaign, if anything."""

    @abstractmethod
    async def count_campaign(
        self, name: str, since: datetime, *, at_most: int | None = None
    ) -> int:
        """How many deliveries of campaign `name` were created since `since`.

        With `at_most`, counting stops there: the answer is min(count, at_most), and the cost
        is bounded by it rather than by the campaign's size (a threshold check needs no more).
        """

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
        at_most: int | None = None,
    ) -> int:
        """How many deliveries of messages with this content fingerprint exist.

        Filtered by creation time (`since`), campaign, deliveries created before the delivery
        id `before`, and leaving out the deliveries of message `exclude_message`. With
        `at_most`, counting stops there (min(count, at_most)), as in `count_campaign`.
        """

    @abstractmethod
    async def message_content(self, message_id: str) -> bytes:
        """The stored content of a message (raises Conflict if there is none)."""

    @abstractmethod
    async def get_pause(self) -> GlobalPause:
        """The global kill switch's state (not paused if it was never set)."""


class IntakeWrites(Protocol):
    """Accepting messages: deciding under the recipients' lock and committing a message
    with its deliveries at once."""

    @abstractmethod
    def lock_recipients(
        self, recipients: Sequence[str], *, campaign: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive section for these recipient keys while deciding and committing.

        Caps are checked and reserved inside this section, so concurrent messages to one
        person (on any instance sharing the store) are decided one after the other.
        `campaign` is the campaign of the mail decided inside: a store may read it with the
        decision's first read (PostgreSQL: one round trip); it changes nothing else.
        """

    @abstractmethod
    async def add_message(
        self,
        message: Message,
        content: bytes,
        deliveries: Sequence[NewDelivery],
        idempotency: IdempotencyRecord | None = None,
        esp_request: EspRequest | None = None,
        *,
        claim: IntakeClaim | None = None,
    ) -> None:
        """Commit a message, its content and its deliveries in one transaction.

        With `idempotency`, raise Conflict if that key was already used. With `esp_request`,
        the ESP request the message came in as is kept with it (see `esp_request`).
        With `claim`, every `queued` delivery without a due time is committed as `claim_due`
        would leave it: leased to `claim.owner` until `claim.lease_until` and `sending`,
        attempt 1 (its first transition still the decision's `queued`); the caller sends it.
        """

    @abstractmethod
    async def add_messages(
        self,
        messages: Sequence[NewMessage],
        idempotency: IdempotencyRecord | None = None,
        *,
        claim: IntakeClaim | None = None,
    ) -> None:
        """Commit several messages, each as `add_message` would, in one transaction: all of
        them or none (one request of several messages, answered once). With `idempotency`,
        its answer is committed with them (Conflict if the key was used); with `claim`, the
        deliveries to be sent at once of every message are committed claimed.
        """

    @abstractmethod
    async def idempotent_response(self, key: str, since: datetime) -> IdempotencyRecord | None:
        """The first answer given for `key`, if it was given after `since`."""

    @abstractmethod
    async def get_message(self, message_id: str) -> Message | None:
        """The message without its content, or None."""


class DeliveryReads(Protocol):
    """What happened to deliveries: one, a message's, a listing, their timelines."""

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
    async def esp_request(self, message_id: str) -> EspRequest | None:
        """The ESP request a message came in as (for pass-through), or None."""

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


class WorkQueue(Protocol):
    """The dispatcher's work: claiming due deliveries, changing their state, waking them."""

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

    async def finish(self, delivery_id: str, change: Change) -> None:
        """`change` for a caller that does not need the delivery back (the dispatcher's
        `sent`, `failed` or `deferred` after a send): the same write, guards and Conflict,
        but a store may skip reading the changed row. This default calls `change`."""
        await self.change(delivery_id, change)

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


class ContextWrites(Protocol):
    """Context from outside that decisions read: facts and events."""

    @abstractmethod
    async def put_fact(self, fact: Fact) -> None:
        """Record a fact; a newer observation of the same key and contact replaces an older one."""

    @abstractmethod
    async def add_event(self, event: Event) -> None:
        """Record an engagement or suppression event."""


class ReviewState(Protocol):
    """The reviewers' side: campaign decisions, content approvals, the global pause, the
    held queue, edits before approval and the notices telling reviewers something is held."""

    @abstractmethod
    async def set_campaign(self, campaign: Campaign) -> None:
        """Record a campaign's approval or pause state."""

    @abstractmethod
    async def add_approvals(self, approvals: Sequence[ContentApproval]) -> None:
        """Record that these campaign contents were approved (a newer approval of the same
        campaign and content replaces the older one)."""

    @abstractmethod
    async def set_pause(self, pause: GlobalPause) -> None:
        """Record the global kill switch's state durably."""

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


class SuppressionList(Protocol):
    """Durable suppressions: added, listed and lifted (reading one is a `PolicyReads`)."""

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


class AuditLog(Protocol):
    """The audit log."""

    @abstractmethod
    async def add_audit(self, entry: AuditEntry) -> None:
        """Append to the audit log."""

    @abstractmethod
    async def audit(self, limit: int = 100) -> Sequence[AuditEntry]:
        """The latest audit entries, newest first."""


class WebhookOutbox(Protocol):
    """Outbound webhooks: the outbox written with each state change, and its sender's claims."""

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


class Aggregates(Protocol):
    """Counts and reports over whole tables (metrics, campaign listings, the shadow report):
    never on the event loop's thread."""

    @abstractmethod
    async def count_by_state(self) -> dict[DeliveryState, int]:
        """How many deliveries are in each state."""

    @abstractmethod
    async def campaigns(self) -> Sequence[CampaignSummary]:
        """Every campaign that has deliveries or a review state, by name."""

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


class Pruning(Protocol):
    """Forgetting what retention no longer needs."""

    @abstractmethod
    async def prune(self, before: datetime | PruneCutoffs) -> int:
        """Forget what is older than `before` (one cutoff, or one per kind of record):
        finished deliveries with their transitions and outcomes, messages left without
        deliveries, send history, events, facts and idempotency keys. Waiting and held
        deliveries, suppressions and the audit log are kept. Return how many deliveries went."""


class SimulationRuns(Protocol):
    """The server's simulations: at most one running across every process sharing the store,
    held by its owner under a lease, and the last few finished ones with their reports."""

    @abstractmethod
    async def start_simulation(
        self, simulation: Simulation, now: datetime, keep: int
    ) -> Simulation:
        """Record `simulation` (running, its `owner` and `lease_until` set) unless another is
        running; return the running one: `simulation` if it started, else the other.

        In the same write, a running one whose lease ended before `now` is marked failed first
        (as `expire_simulations`), so a simulation whose process died does not block the next.
        Of two processes starting at once, exactly one starts.
        """

    @abstractmethod
    async def renew_simulation(self, simulation_id: str, owner: str, until: datetime) -> bool:
        """Extend `owner`'s lease of a running simulation to `until`; False (nothing changed)
        if it is not running under `owner` any more (finished, or expired and failed)."""

    @abstractmethod
    async def finish_simulation(self, finished: Simulation, keep: int) -> bool:
        """Record how `finished` ended (its `status`, `finished_at`, `error`, `report` and
        `html`; the lease ends) if it is still running under `finished.owner`; False, changing
        nothing, otherwise. Finished simulations beyond the newest `keep` (by start) are
        forgotten in the same write."""

    @abstractmethod
    async def expire_simulations(self, now: datetime, keep: int) -> int:
        """Mark failed every running simulation whose lease ended before `now`, saying why;
        forget finished ones beyond the newest `keep` when any was; return how many."""

    @abstractmethod
    async def running_simulation(self) -> Simulation | None:
        """The running simulation, if any (its lease may have ended: see `lease_until`)."""

    @abstractmethod
    async def get_simulation(self, simulation_id: str) -> Simulation | None:
        """A running or kept simulation, with its report and page once done."""


class SignIns(Protocol):
    """The review page's sessions and its throttle on failed sign-ins, shared by every worker
    and instance using the store. Sessions are kept by the SHA-256 of their token only. Point
    reads and small writes; none of them runs on the send path."""

    @abstractmethod
    async def start_session(self, session: StoredSession, now: datetime) -> None:
        """Keep a new session; forget those that expired by `now` in the same write."""

    @abstractmethod
    async def get_session(self, token_hash: str, now: datetime) -> StoredSession | None:
        """The session with this token hash, unless it has expired by `now`."""

    @abstractmethod
    async def end_session(self, token_hash: str) -> None:
        """Forget a session (sign-out, or a password that changed): every process refuses it."""

    @abstractmethod
    async def leave_notice(self, token_hash: str, text: str) -> None:
        """Keep what a form did for the next page this session sees (replacing any other)."""

    @abstractmethod
    async def take_notice(self, token_hash: str) -> str:
        """The notice left for this session, once across every process (empty if none)."""

    @abstractmethod
    async def count_sign_in(
        self, keys: Sequence[ThrottleKey], now: datetime, window: timedelta
    ) -> timedelta | None:
        """Count an attempt to sign in at `now` as failed against every key, unless a key
        already has its `limit` of failures within `window` before `now`: then count nothing
        and return how long until the oldest of those leaves the window enough to allow one
        more. Attempts on one key are counted one at a time across every process, so
        attempts made at once cannot pass the limit together. Failures older than the
        window are forgotten."""

    @abstractmethod
    async def forgive_sign_in(
        self, clear: Sequence[str], forgive: Sequence[str], at: datetime
    ) -> None:
        """An attempt counted at `at` succeeded: forget every failure of the keys `clear`,
        and that attempt's (one failure at `at`) of the keys `forgive`."""


class Store(
    StoreLifecycle,
    PolicyReads,
    IntakeWrites,
    DeliveryReads,
    WorkQueue,
    ContextWrites,
    ReviewState,
    SuppressionList,
    AuditLog,
    WebhookOutbox,
    Aggregates,
    Pruning,
    SimulationRuns,
    SignIns,
    Protocol,
):
    """Everything sendguard keeps: every role at once, as a backend implements it. See the
    module docstring for the rules every backend enforces."""
