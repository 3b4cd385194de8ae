"""The engine: runs the configured policies for one delivery and explains the decision.

Policies run in config order. Each gets its time budget; a policy that times out or raises is
recorded with its error and counts as its `on_error` verdict (hold by default: fail closed).
Shadow policies are evaluated, logged and counted, never acted on. The combined verdict and
every policy's outcome are kept with the delivery: that record is the explanation the
timeline and the review queue show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import structlog

from sendguard.clock import Clock, monotonic
from sendguard.errors import StoreUnavailable
from sendguard.message import Delivery, DeliveryState
from sendguard.metrics import Metrics
from sendguard.policy import Policy, PolicyContext
from sendguard.store.base import Store
from sendguard.verdict import Action, Decision, Mode, PolicyOutcome, Verdict

log = structlog.get_logger("sendguard.engine")


class OnError(StrEnum):
    """What a policy that fails or times out counts as."""

    FORWARD = "forward"
    HOLD = "hold"


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


@dataclass(frozen=True)
class Plan:
    """What a decision means for a delivery's state."""

    state: DeliveryState
    reason: str
    due_at: datetime | None
    hold_origin: str | None = None


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
        paused = any(o.policy == PAUSE and o.verdict is verdict for o in decision.outcomes)
        origin = "pause" if paused else "policy"
        due = now + hold_expiry if hold_expiry is not None and not paused else None
    return Plan(state, explain(decision), due, origin)


def explain(decision: Decision) -> str:
    """One line naming the policy behind the combined verdict and its reason."""
    verdict = decision.verdict
    for outcome in decision.outcomes:
        if outcome.mode is Mode.ENFORCE and outcome.verdict is verdict:
            return f"{outcome.policy}: {verdict.reason}" if verdict.reason else outcome.policy
    if verdict.action is Action.FORWARD:
        return "every policy passed"
    return verdict.reason


class Engine:
    """Runs the configured policies for deliveries."""

    def __init__(
        self,
        bindings: Sequence[PolicyBinding],
        store: Store,
        clock: Clock,
        metrics: Metrics,
        hold_expiry: timedelta | None = None,
    ) -> None:
        self._bindings = tuple(bindings)
        self._hold_expiry = hold_expiry
        self._store = store
        self._clock = clock
        self._metrics = metrics

    def plan(self, decision: Decision, now: datetime) -> Plan:
        """What `decision` means for a delivery's state, with this engine's hold expiry."""
        return plan(decision, now, self._hold_expiry)

    @property
    def policies(self) -> tuple[PolicyBinding, ...]:
        """The configured policies, in evaluation order."""
        return self._bindings

    async def decide(self, delivery: Delivery, content: bytes | None = None) -> Decision:
        """Judge `delivery` with every policy; raise StoreUnavailable if the store fails.

        `content` is the message's content when it is not committed yet (at intake).
        """
        contents = {delivery.message.id: content} if content is not None else None
        ctx = PolicyContext(self._store, self._clock.now(), contents)
        outcomes = [await self._run(binding, delivery, ctx) for binding in self._bindings]
        if delivery.campaign is not None:
            # The kill switch is part of the core, not a policy: it holds whatever the config.
            campaign = await self._store.get_campaign(delivery.campaign)
            if campaign is not None and campaign.paused:
                reason = f"campaign {campaign.name} is paused"
                outcomes.append(PolicyOutcome(PAUSE, Verdict.hold(reason)))
        decision = Decision.of(outcomes)
        log.info(
            "decision",
            message_id=delivery.message.id,
            delivery_id=delivery.id,
            recipient=delivery.recipient,
            verdict=decision.verdict.action.value,
            reason=explain(decision),
            until=decision.verdict.until.isoformat() if decision.verdict.until else None,
            shadow=[
                f"{o.policy}={o.verdict.action.value}" for o in outcomes if o.mode is Mode.SHADOW
            ]
            or None,
        )
        return decision

    async def _run(
        self, binding: PolicyBinding, delivery: Delivery, ctx: PolicyContext
    ) -> PolicyOutcome:
        started = monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(binding.budget.total_seconds()):
                verdict = await binding.policy.evaluate(delivery, ctx)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"evaluate returned {type(verdict).__name__}, not a Verdict")
        except StoreUnavailable:
            raise  # nothing can be committed either: the ingress answers "try again later"
        except TimeoutError:
            error = f"timed out after {binding.budget.total_seconds():g}s"
            verdict = binding.fallback(error)
        except Exception as exc:  # a plugin's bug must not take the ingress down
            error = f"{type(exc).__name__}: {exc}"
            log.exception("policy failed", policy=binding.name, delivery_id=delivery.id)
            verdict = binding.fallback(error)
        seconds = monotonic() - started
        self._metrics.policy_duration.labels(policy=binding.name).observe(seconds)
        self._metrics.decisions.labels(
            policy=binding.name, verdict=verdict.action.value, mode=binding.mode.value
        ).inc()
        return PolicyOutcome(binding.name, verdict, binding.mode, error, seconds)
