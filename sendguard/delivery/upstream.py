"""The upstream contract: one small seam between the dispatcher and whatever sends mail.

`send` either returns (the upstream took the message) or raises UpstreamTransient (retry later)
or UpstreamPermanent (give up). Real upstreams (outbox, SMTP, HTTP ESPs) and test doubles are
peers behind this seam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from sendguard.esp_request import EspRequest

UPSTREAM_GROUP = "sendguard.upstreams"
"""The entry point group upstream kinds register under (the built-ins too)."""


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


@runtime_checkable
class PassThrough(Protocol):
    """An upstream that can send an ESP's request as it came, narrowed to one recipient.

    The dispatcher uses `send_request` instead of `send` when the message came in through the
    endpoint of the ESP this upstream talks to (`passes_through`, an ingress name such as
    `sendgrid`), so templates, tracking settings and categories apply at that ESP.
    """

    passes_through: str

    async def send_request(self, envelope: Envelope, request: EspRequest) -> None:
        """Send `request` to `envelope.recipient` only; raise as `Upstream.send` does."""
        ...


def passing_through(upstream: Upstream, esp: str) -> PassThrough | None:
    """`upstream` if it can send requests that came in through `esp`'s endpoint as they came."""
    if isinstance(upstream, PassThrough) and upstream.passes_through == esp:
        return upstream
    return None


UpstreamFactory = Callable[[Any], Upstream]
"""What an entry point of `sendguard.upstreams` names: called with the `upstream:` section
(a built-in's own model, or for another kind an object with `kind` and `options`)."""


class UpstreamLoadError(Exception):
    """No upstream of that kind is installed, or it cannot be imported."""


def load_upstream_factory(kind: str) -> UpstreamFactory:
    """The factory registered as `kind`; UpstreamLoadError says what is installed."""
    found = {ep.name: ep for ep in entry_points(group=UPSTREAM_GROUP)}
    if kind not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UpstreamLoadError(f"no upstream kind {kind!r} is installed; installed: {known}")
    try:
        factory = found[kind].load()
    except Exception as exc:  # a broken plugin must be reported, whatever it raises
        raise UpstreamLoadError(f"upstream {kind!r} failed to import: {exc}") from exc
    if not callable(factory):
        raise UpstreamLoadError(f"upstream {kind!r} does not name a callable")
    built: UpstreamFactory = factory
    return built
