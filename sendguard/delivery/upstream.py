"""The upstream contract: one small seam between the dispatcher and whatever sends mail.

`send` either returns (the upstream took the message) or raises UpstreamTransient (retry later)
or UpstreamPermanent (give up). Real upstreams (outbox, SMTP, HTTP ESPs) and test doubles are
peers behind this seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Envelope:
    """Who the message is from and to, as the upstream should see it."""

    mail_from: str
    recipient: str
    delivery_id: str


class Upstream(Protocol):
    """Sends one delivery's content."""

    name: str
    """A short label for metrics and logs (`outbox`, `smtp`, ...)."""

    async def send(self, envelope: Envelope, content: bytes) -> None:
        """Hand over one message; raise UpstreamTransient or UpstreamPermanent on failure."""
        ...

    async def check(self) -> None:
        """Raise UpstreamError unless the upstream looks reachable now (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
