"""The client behind a trusted reverse proxy (`http.trusted_proxies`).

A proxy that terminates TLS (nginx, Caddy, a cloud load balancer) connects from its own address
over plain HTTP; what the client used arrives in headers the proxy sets: `X-Forwarded-For`,
`-Proto` and `-Host`, or RFC 7239 `Forwarded` (`http.proxy_headers` says which; the other kind
is never read, since a proxy passes on unchanged what it does not write itself). They are
believed only from a peer in `trusted_proxies`, and only as far as trusted proxies wrote them:
each proxy appends the address it was connected from, so the client is the right-most address
that is not itself a trusted proxy — anything left of it the client wrote, and could have
written anything. A request from any other peer is taken as it came, whatever its headers say.

The request the handlers see then has the client's address (`remote`: the sign-in throttle,
the `Received:` line of an HTTP-submitted message), scheme (`secure`: the cookies' Secure flag)
and host (the origin that the review page's forms must come from). Our own module rather than
aiohttp-remotes: its relaxed middlewares take the left-most, client-written address (and
scheme), its strict ones want every hop's address listed and answer 400 to a chain they did
not foresee or to a header sent twice, and each is one more middleware (a coroutine and a
call) on every request; here a service with no trusted proxy pays one lookup and a None test
in the middleware it has anyway.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import hdrs, web

from sendguard.config import IPNetwork

ProxyHeaders = Literal["x-forwarded", "forwarded"]
# What a host in X-Forwarded-Host or Forwarded's `host=` may be: a name or an address, with a
# port; anything else (a path, spaces, a userinfo) is not a host a proxy wrote.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class Hop:
    """What one forwarding hop says of the client it was connected from."""

    client: str
    """An address (`192.0.2.7`, `2001:db8::7`), or an identifier a proxy put in its stead
    (RFC 7239's `unknown` or `_hidden`)."""
    scheme: str | None = None
    host: str | None = None


# Parsing an address takes microseconds and the same few peers and clients come again and
# again: every request from a trusted proxy parses its peer and each hop.
@functools.lru_cache(maxsize=4096)
def address(token: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a forwarding entry as proxies write it (`192.0.2.7`, `2001:db8::7`,
    `[2001:db8::7]:4711`, `192.0.2.7:4711`), or None when it is no address."""
    text = token.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # an IPv4 address with a port; IPv6 has two colons or more
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 peers as `::ffff:192.0.2.7`; 192.0.2.0/24 covers them.
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


@dataclass(frozen=True)
class Forwarding:
    """The trusted proxies and the headers they write."""

    proxies: tuple[IPNetwork, ...]
    headers: ProxyHeaders = "x-forwarded"

    def trusts(self, token: str | None) -> bool:
        """Whether `token` (a peer, or an entry of a forwarding header) is a trusted proxy."""
        if token is None:
            return False
        ip = address(token)
        return ip is not None and any(ip in network for network in self.proxies)

    def client(self, hops: Sequence[Hop], peer: str) -> Hop:
        """The client of a request from the trusted `peer` whose proxies said `hops` (the
        header's entries in order, the nearest proxy's last): the right-most hop that is no
        trusted proxy; when all are, the left-most; with none, the peer itself."""
        for hop in reversed(hops):
            if not self.trusts(hop.client):
                return hop
        return hops[0] if hops else Hop(peer)

    def hops(self, request: web.BaseRequest) -> list[Hop]:
        """What the request's forwarding headers (of the configured kind) say, hop by hop."""
        if self.headers == "forwarded":
            return [
                Hop(element.get("for", "unknown"), element.get("proto"), element.get("host"))
                for element in request.forwarded
            ]
        entries = [
            entry.strip()
            for value in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
            for entry in value.split(",")
            if entry.strip()
        ]
        # Proxies overwrite X-Forwarded-Proto and -Host rather than append: the nearest one's
        # (the last value) is what the client used, whichever hop the client turns out to be.
        scheme = _last(request.headers.getall(hdrs.X_FORWARDED_PROTO, []))
        host = _last(request.headers.getall(hdrs.X_FORWARDED_HOST, []))
        return [Hop(entry, scheme, host) for entry in entries or [request.remote or ""]]

    def view(self, request: web.Request) -> web.Request:
        """The request as its client made it, when it came through a trusted proxy; else
        the request itself."""
        if not self.trusts(request.remote):
            return request
        hop = self.client(self.hops(request), request.remote or "")
        ip = address(hop.client)
        scheme = (hop.scheme or "").lower()
        return request.clone(
            # An identifier is a proxy's, but bounded: it becomes a throttle key in the store.
            remote=str(ip) if ip is not None else hop.client[:100],
            scheme=scheme if scheme in _SCHEMES else request.scheme,
            host=hop.host if hop.host and _HOST.match(hop.host) else request.host,
        )


def _last(values: Sequence[str]) -> str | None:
    """The last entry of a header that may come as several lines or one comma list."""
    entries = [e.strip() for v in values for e in v.split(",") if e.strip()]
    return entries[-1] if entries else None


def forwarding(proxies: Sequence[IPNetwork], headers: ProxyHeaders) -> Forwarding | None:
    """The forwarding of `http.trusted_proxies`, or None when no proxy is trusted."""
    return Forwarding(tuple(proxies), headers) if proxies else None


FORWARDING: web.AppKey[Forwarding | None] = web.AppKey("forwarding")
"""The application's forwarding (None: no trusted proxy), read by the `guard` middleware."""
