"""`context`: send only while the premise of a message is true and its data is fresh.

`X-Sendguard-Requires: key=value` (repeatable) names facts that must hold for the recipient.
The fact is looked up for the recipient as contact first, then without a contact.

- every fact holds → forward;
- a fact contradicts (it is there with another value) → `on_contradiction` (drop by default);
- a fact is missing → delay, judged again as soon as the fact is posted (`POST /v1/facts`
  wakes the delivery) or when the wait ends (`X-Sendguard-Wait`, else `max_wait`), then
  `on_timeout` (hold by default);
- `X-Sendguard-Data-As-Of` older than `max_data_age` → `on_stale` (hold by default).
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel

from sendguard.duration import Duration, format_duration
from sendguard.message import Delivery
from sendguard.policy import PolicyContext, PolicyOptions
from sendguard.verdict import Verdict


class ContextOptions(PolicyOptions):
    """Options of the context policy."""

    max_wait: Duration = timedelta(hours=24)
    on_timeout: Literal["hold", "drop", "forward"] = "hold"
    on_contradiction: Literal["drop", "hold"] = "drop"
    max_data_age: Duration | None = timedelta(hours=24)
    on_stale: Literal["hold", "drop"] = "hold"


def _act(action: str, reason: str) -> Verdict:
    if action == "drop":
        return Verdict.drop(reason)
    if action == "hold":
        return Verdict.hold(reason)
    return Verdict.forward(reason)


class ContextPolicy:
    """Checks the facts a message requires and the age of the data it was built from."""

    Options: ClassVar[type[BaseModel]] = ContextOptions

    def __init__(self, options: ContextOptions) -> None:
        self._options = options

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        options = self._options
        fields = delivery.message.fields
        if fields.data_as_of is not None and options.max_data_age is not None:
            age = ctx.now - fields.data_as_of
            if age > options.max_data_age:
                return _act(
                    options.on_stale,
                    (
                        f"data as of {fields.data_as_of.isoformat()} is {format_duration(age)} old,"
                        f" older than max_data_age {format_duration(options.max_data_age)}"
                    ),
                )
        missing = []
        for requirement in fields.requires:
            fact = await ctx.fact(requirement.key, delivery.recipient.lower())
            if fact is None:
                fact = await ctx.fact(requirement.key)
            if fact is None:
                missing.append(str(requirement))
            elif fact.value != requirement.value:
                return _act(
                    options.on_contradiction,
                    (
                        f"{requirement.key} is {fact.value!r}, the message requires "
                        f"{requirement.value!r}"
                    ),
                )
        if not missing:
            if fields.requires:
                return Verdict.forward("premises hold: " + ", ".join(map(str, fields.requires)))
            return Verdict.forward("no premises")
        wait = fields.wait if fields.wait is not None else options.max_wait
        deadline = delivery.message.received_at + wait
        if ctx.now >= deadline:
            return _act(
                options.on_timeout,
                (f"waited {format_duration(wait)} for {', '.join(missing)}; no such fact came"),
            )
        return Verdict.delay(deadline, f"waiting for {', '.join(missing)}")
