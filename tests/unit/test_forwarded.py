"""Who the client is behind trusted proxies (`http.trusted_proxies`): the right-most address
not itself a trusted proxy, read only from the configured kind of header, and the config
errors that name the field. (tests/e2e/test_review_proxy.py drives it through real nginx.)"""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp.test_utils import make_mocked_request

from sendguard.config import parse_config
from sendguard.errors import ConfigError
from sendguard.ingress.forwarded import Forwarding, Hop, address, forwarding

PROXIES = Forwarding((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")))


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7 ", "192.0.2.7"),
        ("192.0.2.7:4711", "192.0.2.7"),
        ("2001:db8::7", "2001:db8::7"),
        ('"[2001:db8::7]:4711"', "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # a dual-stack listener's IPv4 peer
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("10.0.0.1/8", None),
    ],
)
def test_address_as_proxies_write_it(token: str, expected: str | None) -> None:
    found = address(token)
    assert (str(found) if found is not None else None) == expected


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        (["192.0.2.7"], "192.0.2.7"),
        (["192.0.2.7", "10.0.0.2"], "192.0.2.7"),  # through a second trusted proxy
        # What the client wrote itself is left of the address the proxy appended.
        (["198.51.100.1", "192.0.2.7"], "192.0.2.7"),
        (["198.51.100.1", "192.0.2.7", "10.9.9.9", "fd00::3"], "192.0.2.7"),
        (["10.0.0.3", "10.0.0.2"], "10.0.0.3"),  # all trusted: the farthest
        (["garbage", "192.0.2.7"], "192.0.2.7"),
        (["_hidden", "10.0.0.2"], "_hidden"),  # an identifier a proxy put instead
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(chain: list[str], client: str) -> None:
    assert PROXIES.client([Hop(h) for h in chain], "10.0.0.1").client == client


def test_no_hops_leave_the_peer() -> None:
    assert PROXIES.client([], "10.0.0.1") == Hop("10.0.0.1")


def test_x_forwarded_headers_are_read_as_one_list_and_proto_host_from_the_nearest() -> None:
    request = make_mocked_request(
        "GET",
        "/review",
        headers=[
            ("X-Forwarded-For", "198.51.100.1, 192.0.2.7"),
            ("X-Forwarded-For", "10.0.0.2"),
            ("X-Forwarded-Proto", "http, https"),
            ("X-Forwarded-Host", "review.example"),
            ("Forwarded", "for=203.0.113.9;proto=http"),
        ],
    )
    hops = PROXIES.hops(request)
    assert [h.client for h in hops] == ["198.51.100.1", "192.0.2.7", "10.0.0.2"]
    assert {(h.scheme, h.host) for h in hops} == {("https", "review.example")}


def test_forwarded_is_read_only_when_configured_and_x_forwarded_then_ignored() -> None:
    standard = Forwarding(PROXIES.proxies, "forwarded")
    request = make_mocked_request(
        "GET",
        "/review",
        headers=[
            ("Forwarded", 'for=198.51.100.1, for="[2001:db8::7]:4711";proto=https;host=r.example'),
            ("Forwarded", "for=10.0.0.2;proto=http"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    client = standard.client(standard.hops(request), "10.0.0.1")
    assert client == Hop("[2001:db8::7]:4711", "https", "r.example")


def test_no_trusted_proxy_is_no_forwarding() -> None:
    assert forwarding([], "x-forwarded") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http: {trusted_proxies: [nonsense]}", "http.trusted_proxies[0]: 'nonsense' is not a"),
        ("http: {trusted_proxies: [10.0.0.1/8]}", "http.trusted_proxies[0]:"),  # host bits
        ("http: {trusted_proxies: 10.0.0.0/8}", "http.trusted_proxies: Input should be a"),
        ("http: {proxy_headers: x-real-ip}", "http.proxy_headers: Input should be 'x-forwarded'"),
    ],
)
def test_config_errors_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    found = [str(p) for p in caught.value.problems]
    assert any(expected in p for p in found), found


def test_config_takes_networks_and_addresses() -> None:
    config = parse_config(
        "http: {trusted_proxies: [10.0.0.0/8, 127.0.0.1, '::1'], proxy_headers: forwarded}",
        "t.yaml",
    ).config
    assert [str(n) for n in config.http.trusted_proxies] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
    ]
    assert config.http.proxy_headers == "forwarded"
