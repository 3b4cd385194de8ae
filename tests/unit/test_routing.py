"""Routing: which upstream a delivery goes through, and what check-config says of routes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from sendguard.config import RouteOptions, parse_config
from sendguard.delivery.routing import RouteKey, Routing, build_routing
from sendguard.delivery.upstream import Envelope, Upstream
from sendguard.errors import ConfigError, UpstreamError
from sendguard.headers import Headers
from sendguard.message import Message, MessageClass, SendguardFields
from sendguard.reload import SwitchableUpstream

ROUTED = """
upstreams:
  receipts: {kind: outbox, path: var/receipts}
  spring: {kind: outbox, path: var/spring}
  billing: {kind: outbox, path: var/billing}
routes:
  - {class: transactional, upstream: receipts}
  - {campaign: spring, class: marketing, upstream: spring}
  - {sender_domain: Billing.Example.COM., upstream: billing}
upstream: {kind: outbox, path: var/rest}
"""


class Recording:
    def __init__(self, name: str, *, broken: bool = False) -> None:
        self.name = name
        self.broken = broken
        self.sent: list[str] = []
        self.closed = False
        self.gate: asyncio.Event | None = None

    async def send(self, envelope: Envelope, content: bytes) -> None:
        assert not self.closed
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(envelope.recipient)

    async def check(self) -> None:
        if self.broken:
            raise UpstreamError(f"{self.name} does not answer")

    async def close(self) -> None:
        self.closed = True


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {})
    return [str(p) for p in caught.value.problems]


def routing(text: str) -> Routing:
    config = parse_config(text, "test.yaml", {}).config
    return build_routing(config, lambda options: Recording(str(getattr(options, "path", ""))))


def key(
    campaign: str | None = None,
    cls: MessageClass = MessageClass.MARKETING,
    sender: str = "shop@example.com",
) -> RouteKey:
    fields = SendguardFields(campaign=campaign, message_class=cls)
    received = datetime(2026, 1, 1, tzinfo=UTC)
    return RouteKey.of(Message("m1", received, "smtp", sender, ("a@x.org",), Headers(()), fields))


@pytest.mark.parametrize(
    ("route_key", "label"),
    [
        (key(cls=MessageClass.TRANSACTIONAL, campaign="spring"), "receipts"),  # first match wins
        (key(campaign="spring"), "spring"),
        (key(campaign="autumn"), "var/rest"),  # no route: `upstream:`
        (key(sender="inv@billing.example.com"), "billing"),
        (key(sender="inv@BILLING.example.com"), "billing"),
        (key(sender="inv@eu.billing.example.com"), "var/rest"),  # a subdomain is another
        (None, "var/rest"),  # a review notice has no message: the default
    ],
)
def test_the_first_route_that_matches_chooses(route_key: RouteKey | None, label: str) -> None:
    assert routing(ROUTED).choose(route_key).label == label


def test_a_route_without_conditions_is_the_default_and_upstream_is_not_built() -> None:
    built = routing(
        "upstreams: {a: {kind: outbox, path: var/a}, b: {kind: outbox, path: var/b}}\n"
        "routes: [{class: transactional, upstream: a}, {upstream: b}]\n"
    )
    assert built.choose(key()).label == "b"
    assert built.choose(None).label == "b"
    assert [m.label for m in built.members()] == ["a", "b"]


def test_without_routes_the_single_upstream_is_everything() -> None:
    built = routing("upstream: {kind: outbox, path: var/only}\n")
    assert [m.label for m in built.members()] == ["var/only"]
    assert built.choose(key(cls=MessageClass.TRANSACTIONAL)).label == "var/only"


def test_check_config_names_each_bad_route() -> None:
    found = problems(
        "upstreams: {bulk: {kind: outbox}}\n"
        "routes:\n"
        "  - {campaign: spring, upstream: bulk}\n"
        "  - {class: marketing, upstream: newsletter}\n"
        "  - {campaign: spring, class: marketing, upstream: bulk}\n"
        "  - {upstream: bulk}\n"
        "  - {sender_domain: example.com, upstream: bulk}\n"
    )
    assert found[0].startswith("routes[1].upstream: no upstream named 'newsletter'")
    assert "configured: bulk" in found[0]
    assert found[1].startswith("routes[2]: can never match: routes[0] comes first")
    assert "campaign: spring" in found[1]
    assert found[2].startswith("routes[4]: can never match: routes[3] comes first")
    assert len(found) == 3


def test_routes_need_a_default() -> None:
    assert problems(
        "upstreams: {bulk: {kind: outbox}}\nroutes: [{class: marketing, upstream: bulk}]\n"
    ) == [
        "upstream: routes need a default for the deliveries no route matches: set upstream, "
        "or end routes with one without conditions"
    ]


def test_route_problems_come_with_the_other_problems() -> None:
    found = problems(
        "delivery: {wokers: 4}\n"
        "upstreams: {bulk: {kind: outbox, pth: x}}\n"
        "routes:\n"
        "  - {sender_domain: news@example.com, upstream: bulk}\n"
        "  - {class: weekly, upstream: bulk}\n"
        "  - {upstream: nobody}\n"
    )
    paths = [p.split(":")[0] for p in found]
    assert "delivery.wokers" in paths
    assert "upstreams.bulk.pth" in paths
    assert "routes[0].sender_domain" in paths
    assert "routes[1].class" in paths
    assert "routes[2].upstream" in paths
    assert any("allowed: kind, path" in p for p in found), found


def test_named_upstreams_read_their_secrets_and_check_their_kind() -> None:
    found = problems(
        "upstreams:\n"
        "  sg: {kind: sendgrid, api_key: 'env:NO_SUCH_KEY'}\n"
        "  odd: {kind: carrier-pigeon}\n"
        "routes: [{upstream: sg}]\n"
    )
    assert any(p.startswith("upstreams.sg.api_key:") for p in found), found
    assert any(p.startswith("upstreams.odd.kind:") for p in found), found
    settings = parse_config(
        "upstreams: {sg: {kind: sendgrid, api_key: 'env:SG_KEY'}}\nroutes: [{upstream: sg}]\n",
        "test.yaml",
        {"SG_KEY": "SG.secret"},
    )
    assert settings.config.upstreams["sg"].api_key == "SG.secret"  # type: ignore[union-attr]


async def test_readiness_checks_every_upstream_in_use() -> None:
    good, bad = Recording("smtp"), Recording("sendgrid", broken=True)
    routes = (RouteOptions(class_=MessageClass.MARKETING, upstream="bulk"),)
    upstream = SwitchableUpstream(Routing(routes, {"tx": good, "bulk": bad}, Recording("smtp")))
    with pytest.raises(UpstreamError, match=r"^bulk: sendgrid does not answer$"):
        await upstream.check()
    alone = SwitchableUpstream(Recording("smtp", broken=True))
    with pytest.raises(UpstreamError, match=r"^smtp does not answer$"):  # as before routes
        await alone.check()


async def test_a_reload_swaps_the_routed_set_and_a_send_in_flight_finishes_on_its_own() -> None:
    config = parse_config(ROUTED, "test.yaml", {}).config
    old = {name: Recording(name) for name in ("receipts", "spring", "billing")}
    first = Routing(tuple(config.routes), old, Recording("rest"))
    upstream = SwitchableUpstream(first)
    assert upstream.name == "rest"
    gate = asyncio.Event()
    old["spring"].gate = gate

    async def in_flight() -> None:
        async with upstream.chosen(key(campaign="spring")) as chosen:
            await chosen.upstream.send(Envelope("a@x.org", "b@x.org", "d1"), b"x")

    sending = asyncio.create_task(in_flight())
    await asyncio.sleep(0)
    new: Upstream = Recording("new")
    await upstream.switch(new)
    assert old["receipts"].closed and old["billing"].closed and first.default is not None
    assert first.default.closed  # type: ignore[attr-defined]
    assert not old["spring"].closed  # still sending
    gate.set()
    await sending
    assert old["spring"].closed and old["spring"].sent == ["b@x.org"]
    async with upstream.chosen(key(campaign="spring")) as chosen:
        assert chosen.label == "new"
    await upstream.close()
    assert new.closed  # type: ignore[attr-defined]
