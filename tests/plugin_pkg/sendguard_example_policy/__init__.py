"""An example third-party policy: drop every recipient at the configured domains."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from sendguard.address import domain_of
from sendguard.message import Delivery
from sendguard.policy import PolicyContext, PolicyOptions
from sendguard.verdict import Verdict


class BlockDomainOptions(PolicyOptions):
    domains: list[str]


class BlockDomain:
    Options: ClassVar[type[BaseModel]] = BlockDomainOptions

    def __init__(self, options: BlockDomainOptions) -> None:
        self._domains = {d.lower() for d in options.domains}

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        domain = domain_of(delivery.recipient)
        if domain in self._domains:
            return Verdict.drop(f"{domain} is blocked")
        return Verdict.forward()


class RaiseOptions(PolicyOptions):
    message: str = "this policy has a bug"


class Raise:
    """A policy with a bug: every evaluation raises, so the tests see what sendguard does with
    a third-party plugin's exception (its `on_error`, and the traceback in the log)."""

    Options: ClassVar[type[BaseModel]] = RaiseOptions

    def __init__(self, options: RaiseOptions) -> None:
        self._message = options.message

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        raise RuntimeError(self._message)
