"""`context`: send only while the premise of a message is true and its data is fresh.

Premises come from `X-Sendguard-Requires` (must hold) and `X-Sendguard-Unless` (must not hold),
and from `campaigns:` in the options for tools that cannot set headers. Each names a fact key
and values (`key=value`, `key!=value`, `key in a|b`, optionally `; after=<time>`). The fact is
looked up for the recipient as contact first, then without a contact, and followed to its
successor while it names one (`superseded_by`). It counts only if it was observed after the
premise's `after=`, else no earlier than `max_fact_age` before the message was received.

- every premise holds (and no `unless` premise does) → forward;
- a fact settles a premise the wrong way → `on_contradiction` (drop by default);
- a fact is missing, too old, or has a pending value (`pending_values`) → delay, judged again as
  soon as a fact is posted for a key it waits on, or when the wait ends (`X-Sendguard-Wait`,
  else the campaign's `wait`, else `max_wait`), then `X-Sendguard-On-Timeout` (else the
  campaign's, else `on_timeout`; hold by default). "Send in 6 h unless a no-show is marked"
  is `Unless` + `Wait: 6h` + `On-Timeout: forward`;
- `X-Sendguard-Data-As-Of` older than `max_data_age` → `on_stale` (hold by default);
- a reviewer approved a delivery this policy held (`override_by`) → forward: the approval is
  an explicit override of the premises (other policies still judge it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sendguard.address import recipient_key
from sendguard.duration import Duration
from sendguard.errors import InvalidMessage
from sendguard.facts import Fact
from sendguard.fields import parse_requirement
from sendguard.message import Delivery, Match, OnTimeout, Requirement
from sendguard.phrasing import human_duration, human_time
from sendguard.policy import Lookback, PolicyContext, PolicyOptions
from sendguard.verdict import Verdict

MAX_SUCCESSORS = 16
"""How many `superseded_by` links a premise follows (a longer chain is a loop or a mistake)."""
RECIPIENT = "{recipient}"


def _premises(values: list[str], field: str) -> list[str]:
    for index, text in enumerate(values):
        try:
            parse_requirement(text, field=f"{field}[{index}]")
        except InvalidMessage as exc:
            raise ValueError(str(exc)) from None
    return values


class CampaignPremises(BaseModel):
    """Premises of every message of one campaign, as if its messages carried the headers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requires: list[str] = Field(default_factory=list)
    """Like X-Sendguard-Requires; `{recipient}` in a key stands for the recipient's address."""
    unless: list[str] = Field(default_factory=list)
    """Like X-Sendguard-Unless."""
    wait: Duration | None = None
    on_timeout: OnTimeout | None = None

    @field_validator("requires")
    @classmethod
    def _requires(cls, values: list[str]) -> list[str]:
        return _premises(values, "requires")

    @field_validator("unless")
    @classmethod
    def _unless(cls, values: list[str]) -> list[str]:
        return _premises(values, "unless")


class ContextOptions(PolicyOptions):
    """Options of the context policy."""

    max_wait: Duration = timedelta(hours=24)
    on_timeout: Literal["hold", "drop", "forward"] = "hold"
    on_contradiction: Literal["drop", "hold"] = "drop"
    max_data_age: Duration | None = timedelta(hours=24)
    on_stale: Literal["hold", "drop"] = "hold"
    max_fact_age: Duration | None = timedelta(hours=24)
    """A fact observed longer than this before the message was received does not count."""
    pending_values: list[str] = Field(
        default_factory=lambda: ["pending", "scheduled", "rescheduled"]
    )
    """Values that mean "not settled yet": a premise waits through them instead of failing."""
    campaigns: dict[str, CampaignPremises] = Field(default_factory=dict)


_NO_PREMISES = Verdict.forward("no premises")
"""Verdicts are immutable: the common one is made once, not per delivery."""

_THEN = {
    "forward": "it goes out if no fact came",
    "hold": "a person decides",
    "drop": "it is dropped",
}


def _act(action: str, reason: str, wakes_on: tuple[str, ...] = ()) -> Verdict:
    if action == "drop":
        return Verdict.drop(reason)
    if action == "hold":
        return Verdict.hold(reason, wakes_on)
    return Verdict.forward(reason)


class Status(Enum):
    """Where one premise stands."""

    MET = "met"
    BROKEN = "broken"
    WAITING = "waiting"
    """No fact came (or none fresh enough)."""
    UNSETTLED = "unsettled"
    """A fact came that is not final: a pending value, or a successor that has none yet.
    The world moved, so a timeout never forwards on it: it holds for a person instead."""


@dataclass(frozen=True)
class Finding:
    """One premise judged: its status, what to say about it and the fact keys it waits on."""

    status: Status
    text: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class _Wait:
    """The premises a delivery still waits on, and whether any of them is unsettled."""

    requires: list[str]
    unless: list[str]
    keys: tuple[str, ...]
    unsettled: bool


@dataclass(frozen=True)
class _Campaign:
    requires: tuple[Requirement, ...]
    unless: tuple[Requirement, ...]
    wait: timedelta | None
    on_timeout: OnTimeout | None


def _parsed(texts: list[str], field: str) -> tuple[Requirement, ...]:
    return tuple(parse_requirement(t, field=f"{field}[{i}]") for i, t in enumerate(texts))


def _for(requirement: Requirement, recipient: str) -> Requirement:
    if RECIPIENT not in requirement.key:
        return requirement
    key = requirement.key.replace(RECIPIENT, recipient)
    return Requirement(key, requirement.value, requirement.match, requirement.after)


def _settled(requires: list[Requirement], unless: list[Requirement]) -> str:
    parts = []
    if requires:
        parts.append("premises hold: " + ", ".join(map(str, requires)))
    if unless:
        parts.append("settled otherwise: " + ", ".join(map(str, unless)))
    return "; ".join(parts)


def _operator(requirement: Requirement) -> str:
    return " in " if requirement.match is Match.ONE_OF else requirement.match.value


def _wants(requirement: Requirement) -> str:
    values = ", ".join(repr(v) for v in requirement.values)
    if requirement.match is Match.NOT_EQUAL:
        return f"it not to be {values}"
    if len(requirement.values) > 1:
        return f"one of {values}"
    return values


class ContextPolicy:
    """Checks the facts a message's premises name and the age of the data it was built from."""

    Options: ClassVar[type[BaseModel]] = ContextOptions

    def __init__(self, options: ContextOptions) -> None:
        self._options = options
        self._pending = frozenset(options.pending_values)
        self._campaigns = {
            name: _Campaign(
                _parsed(c.requires, "requires"),
                _parsed(c.unless, "unless"),
                c.wait,
                c.on_timeout,
            )
            for name, c in options.campaigns.items()
        }

    def lookback(self) -> Lookback:
        """The latest fact of a key counts at any age, so facts are never pruned."""
        return Lookback(facts=None)

    def evaluate_now(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        """`evaluate` for a delivery with nothing to check (most mail), or overridden; None
        for the rest (facts to read)."""
        if delivery.override_by is not None:
            return Verdict.forward(f"override by {delivery.override_by}: premises not checked")
        fields = delivery.message.fields
        if (
            fields.data_as_of is None
            and not fields.requires
            and not fields.unless
            and self._campaigns.get(delivery.campaign or "") is None
        ):
            return _NO_PREMISES
        return None

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        if delivery.override_by is not None:
            return Verdict.forward(f"override by {delivery.override_by}: premises not checked")
        fields = delivery.message.fields
        if fields.data_as_of is not None:
            stale = await self._stale(delivery, ctx)
            if stale is not None:
                return stale
        campaign = self._campaigns.get(delivery.campaign or "")
        if campaign is None and not fields.requires and not fields.unless:
            return _NO_PREMISES  # most mail
        requires = [*fields.requires, *(campaign.requires if campaign else ())]
        unless = [*fields.unless, *(campaign.unless if campaign else ())]
        if not requires and not unless:
            return _NO_PREMISES

        options = self._options
        contact = recipient_key(delivery.recipient)
        cutoff = (
            delivery.message.received_at - options.max_fact_age
            if options.max_fact_age is not None
            else None
        )
        waiting: dict[bool, list[str]] = {False: [], True: []}
        keys: list[str] = []
        unsettled = False
        for negative, premises in ((False, requires), (True, unless)):
            for premise in premises:
                found = await self._judge(_for(premise, contact), negative, contact, cutoff, ctx)
                keys.extend(k for k in found.keys if k not in keys)
                if found.status is Status.BROKEN:
                    return _act(options.on_contradiction, found.text, tuple(keys))
                if found.status in (Status.WAITING, Status.UNSETTLED):
                    waiting[negative].append(found.text)
                    unsettled = unsettled or found.status is Status.UNSETTLED
        if not waiting[False] and not waiting[True]:
            return Verdict.forward(_settled(requires, unless))
        wait = _Wait(waiting[False], waiting[True], tuple(keys), unsettled)
        return await self._wait(delivery, campaign, wait, ctx)

    async def _stale(self, delivery: Delivery, ctx: PolicyContext) -> Verdict | None:
        options = self._options
        as_of = delivery.message.fields.data_as_of
        if as_of is None or options.max_data_age is None:
            return None
        age = ctx.now - as_of
        if age <= options.max_data_age:
            return None
        return _act(
            options.on_stale,
            (
                f"data as of {human_time(as_of, await ctx.recipient_zone(delivery))} is"
                f" {human_duration(age)} old, older than max_data_age"
                f" {human_duration(options.max_data_age)}"
            ),
        )

    async def _wait(
        self, delivery: Delivery, campaign: _Campaign | None, found: _Wait, ctx: PolicyContext
    ) -> Verdict:
        """Delay until the wait ends, then apply the timeout action (a premise that is still
        unsettled then is held for a person, never forwarded: the world moved meanwhile)."""
        waiting_for, waiting_unless, keys = found.requires, found.unless, found.keys
        fields = delivery.message.fields
        # The message's own headers win over its campaign's premises, which win over options.
        wait = fields.wait
        if wait is None:
            wait = campaign.wait if campaign and campaign.wait else self._options.max_wait
        on_timeout = fields.on_timeout or (campaign.on_timeout if campaign else None)
        action = on_timeout.value if on_timeout else self._options.on_timeout
        deadline = delivery.message.received_at + wait
        if ctx.now >= deadline:
            parts = []
            if waiting_for:
                parts.append(f"waited {human_duration(wait)} for {', '.join(waiting_for)}")
            if waiting_unless:
                parts.append(
                    f"waited {human_duration(wait)} to hear whether {', '.join(waiting_unless)}"
                )
            if found.unsettled and action != "drop":
                return _act(
                    "hold",
                    "; ".join(parts) + "; it is not settled yet, so a person decides"
                    f" (on_timeout {action} applies only when no fact came)",
                    keys,
                )
            return _act(action, "; ".join(parts) + "; no such fact came", keys)
        zone = await ctx.recipient_zone(delivery)
        until = human_time(deadline, zone)
        parts = []
        if waiting_for:
            parts.append(f"waiting for {', '.join(waiting_for)}")
        if waiting_unless:
            parts.append(f"waiting to hear whether {', '.join(waiting_unless)}")
        then = _THEN[action]
        return Verdict.delay(deadline, f"{'; '.join(parts)} until {until}; then {then}", keys)

    async def _lookup(self, key: str, contact: str, ctx: PolicyContext) -> Fact | None:
        # A fact about this person wins over one about nobody in particular.
        return await ctx.fact(key, contact) or await ctx.fact(key)

    async def _judge(
        self,
        premise: Requirement,
        negative: bool,
        contact: str,
        cutoff: datetime | None,
        ctx: PolicyContext,
    ) -> Finding:
        """Look the premise's fact up (following successors) and say where the premise stands."""
        key = premise.key
        keys = [key]
        fact = await self._lookup(key, contact, ctx)
        while fact is not None and fact.successor is not None and len(keys) <= MAX_SUCCESSORS:
            if fact.successor in keys:
                break  # a loop of successors: judge the last fact reached
            key = fact.successor
            keys.append(key)
            fact = await self._lookup(key, contact, ctx)
        label = (
            str(premise)
            if key == premise.key
            else f"{key}{_operator(premise)}{premise.value} ({premise.key} was superseded)"
        )
        after = premise.after or cutoff
        if fact is None:
            status = Status.WAITING if key == premise.key else Status.UNSETTLED
            return Finding(status, label, tuple(keys))
        if after is not None and fact.observed_at < after:
            return Finding(
                Status.WAITING,
                (
                    f"{label} (the fact {fact.value!r} was observed at"
                    f" {human_time(fact.observed_at)}, before {human_time(after)})"
                ),
                tuple(keys),
            )
        if fact.value in self._pending and fact.value not in premise.values:
            return Finding(
                Status.UNSETTLED,
                f"{label} ({key} is {fact.value!r}, still pending)",
                tuple(keys),
            )
        holds = premise.holds(fact.value)
        if negative and holds:
            return Finding(
                Status.BROKEN,
                f"{key} is {fact.value!r}; the message is not sent when {premise}",
                tuple(keys),
            )
        if not negative and not holds:
            return Finding(
                Status.BROKEN,
                f"{key} is {fact.value!r}, the message requires {_wants(premise)}",
                tuple(keys),
            )
        return Finding(Status.MET, label, tuple(keys))
