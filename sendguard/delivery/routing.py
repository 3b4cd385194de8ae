"""Routing: which upstream sends a delivery, chosen by its message's campaign, class or
sender domain (`routes:` in the config, first match wins), else the `upstream:` section.

A `Routing` is the set built from one config; a reload builds a new one and
`sendguard.reload.SwitchableUpstream` swaps it in whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sendguard.address import domain_of
from sendguard.config import Config, RouteOptions, UpstreamOptions
from sendguard.delivery.upstream import Upstream
from sendguard.errors import UpstreamError
from sendguard.message import Message, MessageClass


@dataclass(frozen=True)
class RouteKey:
    """What routes look at in a message."""

    campaign: str | None
    message_class: MessageClass
    sender_domain: str

    @classmethod
    def of(cls, message: Message) -> RouteKey:
        """The key of `message` (the sender domain as `recipient_key` spells domains)."""
        return cls(
            message.fields.campaign,
            message.fields.message_class,
            domain_of(message.mail_from) if message.mail_from else "",
        )


def matches(route: RouteOptions, key: RouteKey) -> bool:
    """Whether `key` meets every condition `route` gives (none: always)."""
    return (
        (route.campaign is None or route.campaign == key.campaign)
        and (route.class_ is None or route.class_ is key.message_class)
        and (route.sender_domain is None or route.sender_domain == key.sender_domain)
    )


@dataclass(frozen=True)
class Chosen:
    """The upstream a delivery goes through, and its label in metrics and logs."""

    label: str
    upstream: Upstream


@dataclass(frozen=True)
class Routing:
    """The upstreams of one config: the named ones that routes use, and the default."""

    routes: tuple[RouteOptions, ...]
    named: Mapping[str, Upstream]
    default: Upstream | None
    """The `upstream:` section; None when a route without conditions ends the routes."""

    @classmethod
    def single(cls, upstream: Upstream) -> Routing:
        """Everything through one upstream (no routes)."""
        return cls((), {}, upstream)

    def choose(self, key: RouteKey | None) -> Chosen:
        """The first route `key` matches, else the default; None (a notice, not a delivery)
        goes through the default too, or the first route without conditions."""
        for route in self.routes:
            if (key is None and not route.conditions()) or (
                key is not None and matches(route, key)
            ):
                return Chosen(route.upstream, self.named[route.upstream])
        if self.default is None:  # parse_config makes routes end in a default
            raise LookupError("no route matches and no default upstream is configured")
        return Chosen(self.default.name, self.default)

    def members(self) -> list[Chosen]:
        """Every upstream in use, once each."""
        out = [Chosen(name, upstream) for name, upstream in self.named.items()]
        if self.default is not None:
            out.append(Chosen(self.default.name, self.default))
        return out

    async def check(self) -> None:
        """Readiness of every upstream in use; the error names each one that failed."""
        members = self.members()
        results = await asyncio.gather(
            *(m.upstream.check() for m in members), return_exceptions=True
        )
        failed = [
            f"{member.label}: {result}"
            for member, result in zip(members, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed and len(members) == 1 and isinstance(results[0], BaseException):
            raise results[0]  # as without routes: the upstream's own words
        if failed:
            raise UpstreamError("; ".join(failed))


def build_routing(config: Config, build: Callable[[UpstreamOptions], Upstream]) -> Routing:
    """The upstreams `config` uses, built: every named one some route names, and `upstream:`
    unless a route without conditions takes what the others leave."""
    if not config.routes:
        return Routing.single(build(config.upstream))
    names = dict.fromkeys(route.upstream for route in config.routes)
    named = {name: build(config.upstreams[name]) for name in names}
    catch_all = any(not route.conditions() for route in config.routes)
    return Routing(tuple(config.routes), named, None if catch_all else build(config.upstream))
