"""SMTP AUTH that cannot stall the server: password checks off the event loop, failures limited.

Each check runs scrypt (tens of milliseconds of CPU), so it runs in a thread; on the loop, a few
clients guessing passwords delayed every other connection and HTTP request. Failed attempts are
limited per connection (then `421` and the connection is closed) and per client address within
a window (then `454` without checking anything), each refusal after a pause that slows the
guesser without holding anyone else up.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Mapping

from sendguard.clock import monotonic
from sendguard.password import DECOY_HASH, verify_password

MAX_FAILURES_PER_CONNECTION = 3
MAX_FAILURES_PER_ADDRESS = 10
ADDRESS_WINDOW = 300.0
"""Seconds over which failures from one client address are counted."""
REFUSAL_PAUSE = 1.0
"""Seconds a refused AUTH waits before its reply."""
TRACKED_ADDRESSES = 10_000
"""Client addresses remembered at most; the least recently failing are forgotten first."""

CONNECTION_LIMIT_REPLY = "421 4.7.0 Too many failed authentication attempts; closing connection"
ADDRESS_LIMIT_REPLY = (
    "454 4.7.0 Temporary authentication failure: too many failed attempts from your address;"
    " try again later"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AuthGuard:
    """Checks credentials in a thread and counts failures per client address."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = users
        self._failures: OrderedDict[IPAddress | None, deque[float]] = OrderedDict()

    async def verify(self, name: str, password: str) -> bool:
        """True if `password` is `name`'s; the hash check runs off the event loop."""
        stored = self._users.get(name)
        ok = await asyncio.to_thread(verify_password, password, stored or DECOY_HASH)
        return ok and stored is not None

    def _recent(self, address: IPAddress | None) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        cutoff = monotonic() - ADDRESS_WINDOW
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def refusal(self, address: IPAddress | None, connection_failures: int) -> str | None:
        """The reply refusing another AUTH attempt now, or None if it may be tried."""
        if connection_failures >= MAX_FAILURES_PER_CONNECTION:
            return CONNECTION_LIMIT_REPLY
        if len(self._recent(address)) >= MAX_FAILURES_PER_ADDRESS:
            return ADDRESS_LIMIT_REPLY
        return None

    def failed(self, address: IPAddress | None) -> int:
        """Count a failure from `address`; return how many it has within the window."""
        times = self._recent(address)
        times.append(monotonic())
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return len(times)
