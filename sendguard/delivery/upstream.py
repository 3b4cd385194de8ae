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
    smtputf8: bool = False
    """The message needs SMTPUTF8 (RFC 6531): the client sent it so."""
    body_8bit: bool = False
    """The content is 8-bit (RFC 6152 BODY=8BITMIME)."""


class Upstream(Protocol):
    """Sends one delivery's content."""

    name: str
    """A short label for metrics and logs (`outbox`, `smtp`, ...)."""

    async def send(self, envelope: Envelope, content: bytes) -> None:
        """Hand over one message; raise UpstreamTransient or UpstreamPermanent on failure."""
        ...

    async def check(self) -> None:
        """Raise UpstreamError unless the upstream answered recently or answers now (readiness).

        A recent success may be reused for a short time, so probes do not cost a connection.
        """
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
