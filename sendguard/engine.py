"""The engine: runs the configured policies for one delivery and explains the decision.

Policies run in config order. Each gets its time budget; a policy that times out or raises is
recorded with its error and counts as its `on_error` verdict (hold by default: fail closed).
Shadow policies are evaluated, logged and counted, never acted on. The combined verdict and
every policy's outcome are kept with the delivery: that record is the explanation the
timeline and the review queue show. Core checks no config can leave out follow the policies
(the campaign and global kill switches) or come before them (an SMTP client's retransmission,
sendguard/resend.py: dropped without asking the policies).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from sendguard.clock import Clock, monotonic
from sendguard.errors import StoreUnavailable
from sendguard.message import Delivery, DeliveryState, HoldOrigin
from sendguard.metrics import Metrics, PolicySeries, count_policies
from sendguard.policy import JudgesAtOnce, Policy, PolicyContext, ReadsStore
from sendguard.resend import CopyQuery, client_message_id, resend_outcome
from sendguard.store.base import PolicyReads
from sendguard.verdict import (
    SHADOW,
    Action,
    Decision,
    Mode,
    OnError,
    PolicyOutcome,
    Verdict,
    outcome,
)

log = structlog.get_logger("sendguard.engine")


@dataclass(frozen=True)
class PolicyBinding:
    """A configured policy: the instance and how the engine treats it."""

    name: str
    policy: Policy
    mode: Mode = Mode.ENFORCE
    on_error: OnError = OnError.HOLD
    budget: timedelta = timedelta(seconds=1)

    def fallback(self, error: str) -> Verdict:
        """The verdict this policy counts as when it cannot give one."""
        reason = f"policy {self.name} failed ({error}); on_error={self.on_error.value}"
        if self.on_error is OnError.FORWARD:
            return Verdict.forward(reason)
        return Verdict.hold(reason)


PAUSE = "campaign-pause"
"""The name under which the kill switch appears among a delivery's policy outcomes."""
GLOBAL_PAUSE = "global-pause"
"""The name under which the global kill switch appears among a delivery's policy outcomes."""
_PAUSES = frozenset({PAUSE, GLOBAL_PAUSE})


@dataclass(frozen=True)
class Plan:
    """What a decision means for a delivery's state."""

    state: DeliveryState
    reason: str
    due_at: datetime | None
    hold_origin: HoldOrigin | None = None


_STATE_OF = {
    Action.FORWARD: DeliveryState.QUEUED,
    Action.DELAY: DeliveryState.DELAYED,
    Action.HOLD: DeliveryState.HELD,
    Action.DROP: DeliveryState.DROPPED,
}


def plan(decision: Decision, now: datetime, hold_expiry: timedelta | None = None) -> Plan:
    """The state, reason and due time a decision puts a delivery in.

    A delivery held by a policy becomes due again when its review expires (`hold_expiry`);
    one held by the kill switch waits for the campaign to resume.
    """
    verdict = decision.verdict
    state = _STATE_OF[verdict.action]
    due = now if state is DeliveryState.QUEUED else verdict.until
    origin = None
    if state is DeliveryState.HELD:
        # Held by a kill switch (whatever else holds it too): it waits for the resume, and
        # a review expiry must not drop what nobody could review while sending was paused.
        paused = any(
            o.policy in _PAUSES and o.verdict.action is Action.HOLD for o in decision.outcomes
        )
        origin = HoldOrigin.PAUSE if paused else HoldOrigin.POLICY
        due = now + hold_expiry if hold_expiry is not None and not paused else None
    return Plan(state, explain(decision), due, origin)


def explain(decision: Decision) -> str:
    """One line naming the policy behind the combined verdict and its reason (see
    `Decision.explanation`)."""
    return decision.explanation


async def _finish(
    coroutine: Coroutine[Any, Any, Verdict], pending: object, budget: timedelta
) -> Verdict:
    """Drive a policy's coroutine that suspended (`pending`: what it awaits) to its verdict,
    raising TimeoutError past `budget`.

    Most policies answer without waiting at all (the embedded store reads synchronously), and
    a timer per policy and delivery would cost more than the policy itself. So `decide` runs
    each coroutine directly first; only one that suspends gets here, under the time budget.
    """
    async with asyncio.timeout(budget.total_seconds()):
        return await _resume(coroutine, pending)


async def _resume(coroutine: Coroutine[Any, Any, Verdict], pending: object) -> Verdict:
    """Drive a suspended coroutine to its end as a Task would: wait for what it awaits, then
    resume it (it reads the awaited future's result or exception itself)."""
    while True:
        try:
            if isinstance(pending, asyncio.Future):
                await asyncio.wait((pending,))
            else:
                await asyncio.sleep(0)  # a bare yield
        except BaseException:
            await _cancel(coroutine, pending)  # the time budget ran out, or shutdown
            raise
        try:
            pending = coroutine.send(None)
        except StopIteration as done:
            result: Verdict = done.value
            return result


async def _cancel(coroutine: Coroutine[Any, Any, Verdict], pending: object) -> None:
    """Cancel a suspended policy as a Task would: what it awaits cancelled and waited for,
    CancelledError raised where it waits, what it awaits while cleaning up waited for.
    Closing it instead skipped that: a PostgreSQL read stopped so was never cancelled, it
    left the recipient's connection mid-query, and the intake's next statement on it failed
    with "another operation is in progress" (451 to the client)."""
    if isinstance(pending, asyncio.Future):
        pending.cancel()
        # A Task (a read shared by several policies) ends its coroutine only at its next step:
        # until then its query holds the connection, so wait for it as an awaiting Task would.
        await asyncio.wait((pending,))
    error: BaseException | None = asyncio.CancelledError()
    while True:
        try:
            pending = coroutine.throw(error) if error is not None else coroutine.send(None)
        except BaseException:  # noqa: BLE001 - ended, as it should, with CancelledError (or else)
            return
        try:
            if isinstance(pending, asyncio.Future):
                await asyncio.wait((pending,))
            else:
                await asyncio.sleep(0)
            error = None
        except BaseException:
            coroutine.close()  # cancelled again while cleaning up (shutdown): stop here
            raise


def history_span(
    bindings: Sequence[PolicyBinding], kind: Literal["history", "events"] = "history"
) -> timedelta | None:
    """How far back the policies read a recipient's sends (or events, `kind`): the longest
    `Lookback.history` (`Lookback.events`).

    A decision reads that span once and every policy counts in it. None (a policy reads at
    any age, or does not say what it reads) reads as each policy asks.
    """
    longest = timedelta(0)
    for binding in bindings:
        if not isinstance(binding.policy, ReadsStore):
            continue
        span = getattr(binding.policy.lookback(), kind)
        if span is None:
            return None
        longest = max(longest, span)
    return longest


def reads_recipient(bindings: Sequence[PolicyBinding]) -> bool:
    """Whether a policy says it reads a recipient's sends or events (`Lookback`): then a
    decision reads them, with the recipient's suppression and time zone, before the first
    policy (`Engine.decide`)."""
    for binding in bindings:
        if isinstance(binding.policy, ReadsStore):
            lookback = binding.policy.lookback()
            if lookback.history != timedelta(0) or lookback.events != timedelta(0):
                return True
    return False


@dataclass(frozen=True)
class _Runs:
    """The configured policies of a decision, and their metric series (in the same order)."""

    bindings: tuple[PolicyBinding, ...]
    series: tuple[PolicySeries, ...]
    now: tuple[Callable[[Delivery, PolicyContext], Verdict | None] | None, ...]
    """Each policy's `evaluate_now`, if it has one (`JudgesAtOnce`)."""
    shadow: bool
    """Whether a policy is in shadow mode (else the `decision` line names none: no outcome
    the engine adds itself is)."""


class Engine:
    """Runs the configured policies for deliveries."""

    def __init__(
        self,
        bindings: Sequence[PolicyBinding],
        store: PolicyReads,
        clock: Clock,
        metrics: Metrics,
        hold_expiry: timedelta | None = None,
        *,
        record: bool = True,
    ) -> None:
        """`record=False` (a what-if replay): no decision logged, no metric counted."""
        self._record = record
        self._bindings = tuple(bindings)
        self._history_span = history_span(self._bindings)
        self._events_span = history_span(self._bindings, "events")
        self._reads_recipient = reads_recipient(self._bindings)
        self._hold_expiry = hold_expiry
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._meters: dict[tuple[str, Mode], PolicySeries] = {}
        # The thread whose decisions count without the values' locks (`count_policies`): the
        # first to decide (the event loop's). None for good (`_locked`) once another thread
        # decided; never while a series is shared with other processes (`_one_process`).
        self._owner: int | None = None
        self._locked = False
        self._one_process = False
        self._runs = self._expect(self._bindings)

    def _expect(self, bindings: Sequence[PolicyBinding]) -> _Runs:
        """Create the metric series of these policies up front, so a dashboard shows 0 (not
        "no data") for a verdict never given, and rate() counts the first one; the bindings
        with their series (`labels()` costs more than a count: looked up once)."""
        metrics = self._metrics
        metrics.expect_policies((b.name, b.mode.value) for b in bindings)
        series = []
        for b in bindings:
            found = self._meters.get((b.name, b.mode))
            if found is None:
                found = self._meters[b.name, b.mode] = PolicySeries(metrics, b.name, b.mode.value)
            series.append(found)
        self._one_process = all(s.unlocked() for s in self._meters.values())
        now = tuple(
            b.policy.evaluate_now if isinstance(b.policy, JudgesAtOnce) else None for b in bindings
        )
        shadow = any(b.mode is SHADOW for b in bindings)
        return _Runs(tuple(bindings), tuple(series), now, shadow)

    def reconfigure(self, bindings: Sequence[PolicyBinding], hold_expiry: timedelta | None) -> None:
        """Judge every decision from now on with these policies (a config reload).

        A decision under way finishes with the policies it started with: `decide` reads the
        bindings once. Metric children of removed policies stay, so a dashboard keeps them.
        """
        runs = self._expect(bindings)
        self._bindings, self._runs, self._hold_expiry = tuple(bindings), runs, hold_expiry
        self._history_span = history_span(self._bindings)
        self._events_span = history_span(self._bindings, "events")
        self._reads_recipient = reads_recipient(self._bindings)

    def plan(self, decision: Decision, now: datetime) -> Plan:
        """What `decision` means for a delivery's state, with this engine's hold expiry."""
        return plan(decision, now, self._hold_expiry)

    @property
    def store(self) -> PolicyReads:
        """What the decisions read."""
        return self._store

    @property
    def policies(self) -> tuple[PolicyBinding, ...]:
        """The configured policies, in evaluation order."""
        return self._bindings

    async def decide(
        self,
        delivery: Delivery,
        content: bytes | None = None,
        reads: PolicyReads | None = None,
        *,
        copies: CopyQuery | None = None,
    ) -> Decision:
        """Judge `delivery` with every policy; raise StoreUnavailable if the store fails.

        `content` is the message's content when it is not committed yet (at intake). `reads`
        stands for the store when decisions not committed yet must be seen (the earlier
        messages of one ESP request: `PendingReads`). With `copies` (intake, a message its
        client may send again: sendguard/resend.py), a recipient who already has a delivery of
        an earlier copy gets none: the delivery is dropped as a retransmission, before any
        policy (their verdicts would only count the first copy against the second).
        """
        store = self._store if reads is None else reads
        contents = {delivery.message.id: content} if content is not None else None
        runs = self._runs  # once: a reload during this decision applies to the next
        ctx = PolicyContext(
            store,
            self._clock.now(),
            contents,
            history_span=self._history_span,
            events_span=self._events_span,
            copies=copies,
        )
        if self._reads_recipient or copies is not None:
            # What the policies read about the recipient, read before the first of them
            # and outside every time budget: in a store that serialises decisions by
            # recipient, this first read waits for the recipient's lock (PostgreSQL: another
            # instance's decision on the same address; a connection just made), which is no
            # policy's time. A budget bounds a policy's own work; the store's reads are
            # bounded by the store's timeout (451 / 503, never a hold).
            await ctx.recipient(delivery.recipient)
        if copies is not None:
            copy = await ctx.earlier_copy(delivery.recipient)
            message_id = client_message_id(delivery.message.headers.get("Message-ID"))
            if copy is not None and message_id is not None:
                return self._decided(delivery, Decision.of([resend_outcome(copy, message_id)]))
        campaign = None
        if delivery.campaign is not None:
            # Read before the policies too (the kill switch below reads it whatever the
            # config): a policy that asks (human_hold) then has it without awaiting.
            campaign = await ctx.campaign(delivery.campaign)
        outcomes = await self._judge(runs, delivery, ctx)
        if self._record:
            count_policies(runs.series, outcomes, self._counting())
        if campaign is not None and campaign.paused:
            # The kill switch is part of the core, not a policy: it holds whatever the config.
            reason = f"campaign {campaign.name} is paused"
            outcomes.append(PolicyOutcome(PAUSE, Verdict.hold(reason)))
        pause = await store.get_pause()
        if pause.paused:
            # The global kill switch: every delivery waits, campaign or not, until resumed.
            reason = f"sending is paused by {pause.updated_by}" + (
                f": {pause.note}" if pause.note else ""
            )
            outcomes.append(PolicyOutcome(GLOBAL_PAUSE, Verdict.hold(reason)))
        return self._decided(delivery, Decision.of(outcomes), runs.shadow)

    async def _judge(
        self, runs: _Runs, delivery: Delivery, ctx: PolicyContext
    ) -> list[PolicyOutcome]:
        """Every configured policy's outcome for `delivery`, in order."""
        outcomes: list[PolicyOutcome] = []
        # One clock read between two policies: the end of one is the start of the next.
        started = monotonic()
        for binding, now in zip(runs.bindings, runs.now, strict=True):
            # A policy that can judge at once is called as a function (`JudgesAtOnce`); the
            # others' coroutines run directly: most answer without suspending (see
            # `_finish`), and then no coroutine of the engine's own is made for them.
            verdict: Verdict | None = None
            error: str | None = None
            if now is not None:
                try:
                    verdict = now(delivery, ctx)
                except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the ingress down (logged by _fault)
                    verdict, error = self._fault(binding, delivery, exc)
                else:
                    if verdict is not None and verdict.__class__ is not Verdict:
                        verdict, error = self._checked(binding, delivery, verdict)
            if verdict is None:
                try:
                    coroutine = binding.policy.evaluate(delivery, ctx)
                    pending = coroutine.send(None)
                except StopIteration as done:
                    verdict, error = done.value, None
                    if verdict.__class__ is not Verdict:  # rare: checked again, slowly
                        verdict, error = self._checked(binding, delivery, verdict)
                except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the ingress down (logged by _fault)
                    verdict, error = self._fault(binding, delivery, exc)
                else:
                    verdict, error = await self._suspended(binding, delivery, coroutine, pending)
            ended = monotonic()
            outcomes.append(outcome(binding.name, verdict, binding.mode, error, ended - started))
            started = ended
        return outcomes

    def _counting(self) -> int | None:
        """This thread, if its decisions count without the values' locks (see `_owner`)."""
        here = threading.get_ident()
        if self._owner == here:
            return here
        if self._owner is None and self._one_process and not self._locked:
            self._owner = here  # the first to decide
            return here
        # Another thread decides too (or a series is shared with other processes): every
        # count takes the values' locks from now on.
        self._owner, self._locked = None, True
        return None

    def _decided(self, delivery: Delivery, decision: Decision, shadow: bool = True) -> Decision:
        """`decision`, logged (unless this engine records nothing); `shadow`: whether an
        outcome may be a shadow one (else none is looked for)."""
        if self._record:
            # The bound logger once (the module's lazy proxy assembles or looks it up on every
            # attribute), and nothing built when `info` is off.
            logger = log.bind()
            if logger.is_enabled_for(logging.INFO):
                verdict = decision.verdict
                logger.info(
                    "decision",
                    message_id=delivery.message.id,
                    delivery_id=delivery.id,
                    recipient=delivery.recipient,
                    verdict=verdict.action.value,
                    reason=decision.explanation,
                    until=verdict.until.isoformat() if verdict.until else None,
                    shadow=(
                        [
                            f"{o.policy}={o.verdict.action.value}"
                            for o in decision.outcomes
                            if o.mode is SHADOW
                        ]
                        or None
                    )
                    if shadow
                    else None,
                )
        return decision

    @staticmethod
    async def _suspended(
        binding: PolicyBinding,
        delivery: Delivery,
        coroutine: Coroutine[Any, Any, Verdict],
        pending: object,
    ) -> tuple[Verdict, str | None]:
        """A policy that suspended (awaiting `pending`): its verdict within its time budget."""
        try:
            verdict = await _finish(coroutine, pending, binding.budget)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the ingress down (logged by _fault)
            return Engine._fault(binding, delivery, exc)
        if verdict.__class__ is not Verdict:
            return Engine._checked(binding, delivery, verdict)
        return verdict, None

    @staticmethod
    def _checked(
        binding: PolicyBinding, delivery: Delivery, result: object
    ) -> tuple[Verdict, str | None]:
        """What a policy returned, if it is a Verdict; else it failed."""
        if isinstance(result, Verdict):
            return result, None
        try:
            raise TypeError(f"evaluate returned {type(result).__name__}, not a Verdict")
        except TypeError as exc:
            return Engine._fault(binding, delivery, exc)

    @staticmethod
    def _fault(binding: PolicyBinding, delivery: Delivery, exc: Exception) -> tuple[Verdict, str]:
        """A policy raised `exc` (called while it is handled): it counts as its `on_error`,
        with why; a store failure is raised on, since nothing can be committed either (the
        ingress answers "try again later")."""
        if isinstance(exc, StoreUnavailable):
            raise exc
        if isinstance(exc, TimeoutError):
            error = f"timed out after {binding.budget.total_seconds():g}s"
            return binding.fallback(error), error
        error = f"{type(exc).__name__}: {exc}"
        log.exception("policy failed", policy=binding.name, delivery_id=delivery.id)
        return binding.fallback(error), error
