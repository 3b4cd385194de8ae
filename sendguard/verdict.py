"""Verdicts and their combination.

A policy only reports what it found (a verdict with its reason); the engine alone combines the
verdicts of all policies with `combine`: drop > hold > delay (latest `until`) > forward.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sendguard.value_enum import ValueEnum

__all__ = [
    "NO_POLICY",
    "Action",
    "Decision",
    "Mode",
    "OnError",
    "PolicyOutcome",
    "Verdict",
    "combine",
    "outcome",
]


class Action(ValueEnum):
    """What should happen to a delivery, in increasing order of precedence."""

    FORWARD = "forward"
    DELAY = "delay"
    HOLD = "hold"
    DROP = "drop"

    @property
    def rank(self) -> int:
        """Precedence when policies disagree: the highest rank wins."""
        return _RANK[self]


class OnError(StrEnum):
    """What a policy that fails or times out counts as (`on_error` in its config)."""

    FORWARD = "forward"
    HOLD = "hold"


_RANK = {Action.FORWARD: 0, Action.DELAY: 1, Action.HOLD: 2, Action.DROP: 3}
# Members read in the loops over every outcome of every decision: `Action.DELAY` goes
# through EnumType's `__getattr__` hook (some 850 instructions on 3.11), a global does not.
FORWARD, DELAY = Action.FORWARD, Action.DELAY


@dataclass(frozen=True)
class Verdict:
    """One policy's judgement of one delivery. `until` is required for DELAY, unused otherwise."""

    action: Action
    reason: str = ""
    until: datetime | None = None
    wakes_on: tuple[str, ...] = ()
    """Fact keys whose arrival makes a delayed or policy-held delivery be judged again at once."""

    def __init__(
        self,
        action: Action,
        reason: str = "",
        until: datetime | None = None,
        wakes_on: tuple[str, ...] = (),
    ) -> None:
        if (action is DELAY) != (until is not None):
            raise ValueError("a delay verdict needs `until`; other verdicts must not have one")
        if until is not None and until.tzinfo is None:
            raise ValueError("`until` must be timezone-aware")
        # See PolicyOutcome: one update of the dict, not a call per field.
        self.__dict__.update(action=action, reason=reason, until=until, wakes_on=wakes_on)

    @classmethod
    def forward(cls, reason: str = "") -> Verdict:
        """Send now (as far as this policy is concerned)."""
        return cls(FORWARD, reason)

    @classmethod
    def delay(cls, until: datetime, reason: str, wakes_on: tuple[str, ...] = ()) -> Verdict:
        """Send no earlier than `until`; the delivery is judged again then (or when a fact
        named in `wakes_on` arrives)."""
        return cls(Action.DELAY, reason, until, wakes_on)

    @classmethod
    def hold(cls, reason: str, wakes_on: tuple[str, ...] = ()) -> Verdict:
        """Quarantine for a human to approve or reject (judged again if a fact named in
        `wakes_on` arrives first)."""
        return cls(Action.HOLD, reason, None, wakes_on)

    @classmethod
    def drop(cls, reason: str) -> Verdict:
        """Never send."""
        return cls(Action.DROP, reason)


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The combined verdict: drop > hold > delay (latest `until`) > forward.

    Among verdicts of the winning action, the first one's reason is kept, except for delays,
    where the one with the latest `until` wins. No verdicts at all means forward.
    """
    best: Verdict | None = None
    rank = _RANK
    for verdict in verdicts:
        if (
            best is None
            or rank[verdict.action] > rank[best.action]
            or (
                verdict.action is DELAY
                and best.action is DELAY
                and verdict.until is not None
                and best.until is not None
                and verdict.until > best.until
            )
        ):
            best = verdict
    return best or Verdict.forward()


class Mode(ValueEnum):
    """Whether a policy's verdict counts (`enforce`) or is only recorded (`shadow`)."""

    ENFORCE = "enforce"
    SHADOW = "shadow"


ENFORCE, SHADOW = Mode.ENFORCE, Mode.SHADOW  # see FORWARD


NO_POLICY = "no policy is configured"
"""Why a delivery was let through when the config has no enforcing policy."""


def outcome(
    policy: str, verdict: Verdict, mode: Mode, error: str | None, seconds: float
) -> PolicyOutcome:
    """`PolicyOutcome(policy, verdict, mode, error, seconds)`, made as its __init__ makes it
    (its fields put in its dict, in their order) without the call of __init__ through the
    type: the engine makes one per policy and decision (about 1,200 instructions less each)."""
    made = _new(PolicyOutcome)
    fields = made.__dict__
    fields["policy"] = policy
    fields["verdict"] = verdict
    fields["mode"] = mode
    fields["error"] = error
    fields["seconds"] = seconds
    return made


_new = object.__new__


@dataclass(frozen=True)
class PolicyOutcome:
    """What one policy said about one delivery, kept as part of the explanation."""

    policy: str
    verdict: Verdict
    mode: Mode = Mode.ENFORCE
    error: str | None = None
    seconds: float = 0.0

    def __init__(
        self,
        policy: str,
        verdict: Verdict,
        mode: Mode = Mode.ENFORCE,
        error: str | None = None,
        seconds: float = 0.0,
    ) -> None:
        # One per policy and decision: one update of the instance's dict, not a call of
        # object.__setattr__ per field as the generated __init__ of a frozen dataclass does.
        self.__dict__.update(
            policy=policy, verdict=verdict, mode=mode, error=error, seconds=seconds
        )


@dataclass(frozen=True)
class Decision:
    """The combined verdict of the enforcing policies, with every policy's outcome."""

    verdict: Verdict
    outcomes: tuple[PolicyOutcome, ...] = ()

    def __init__(self, verdict: Verdict, outcomes: tuple[PolicyOutcome, ...] = ()) -> None:
        self.__dict__.update(verdict=verdict, outcomes=outcomes)  # see PolicyOutcome

    @classmethod
    def of(cls, outcomes: Iterable[PolicyOutcome]) -> Decision:
        """Combine outcomes: shadow outcomes are recorded but never acted on (`combine` of
        the enforcing outcomes' verdicts, written out: one loop, no generator)."""
        kept = tuple(outcomes)
        best: Verdict | None = None
        top = -1
        rank = _RANK
        for outcome in kept:
            if outcome.mode is ENFORCE:
                verdict = outcome.verdict
                level = rank[verdict.action]
                if level > top or (
                    verdict.action is DELAY
                    and best is not None
                    and best.action is DELAY
                    and verdict.until is not None
                    and best.until is not None
                    and verdict.until > best.until
                ):
                    best, top = verdict, level
        return cls(best or Verdict.forward(), kept)

    @property
    def explanation(self) -> str:
        """One line naming the policy behind the combined verdict and its reason.

        A forward names every enforcing policy with why it let the delivery go: a person asking
        "why did this reach Ann?" gets the whole answer, not only the first policy's. Worked
        out once, when first asked (the decision's log line and its recorded reason share it;
        not `functools.cached_property`, which takes a lock on every access before 3.12).
        """
        known: str | None = self.__dict__.get("_explanation")
        if known is None:
            known = self._explain()
            object.__setattr__(self, "_explanation", known)
        return known

    def _explain(self) -> str:
        verdict = self.verdict
        if verdict.action is FORWARD:
            passed = [
                f"{o.policy}: {o.verdict.reason}" if o.verdict.reason else o.policy
                for o in self.outcomes
                if o.mode is ENFORCE
            ]
            return "; ".join(passed) if passed else NO_POLICY
        for outcome in self.outcomes:
            if outcome.mode is ENFORCE and outcome.verdict is verdict:
                return f"{outcome.policy}: {verdict.reason}" if verdict.reason else outcome.policy
        return verdict.reason
