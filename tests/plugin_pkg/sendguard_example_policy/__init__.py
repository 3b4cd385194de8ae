"""An example third-party policy: drop every recipient at the configured domains."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from sendguard.address import domain_of
from sendguard.message import Delivery
from sendguard.policy import PolicyContext
from sendguard.verdict import Verdict


class BlockDomainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
