"""Time as an injected dependency, so windows, backoff and leases are testable without sleeps."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where sendguard gets the time from."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def to_micros(at: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (how stores keep time)."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: sendguard only handles timezone-aware times")
    return int(at.timestamp() * 1_000_000)


def from_micros(micros: int) -> datetime:
    """The inverse of `to_micros`, in UTC."""
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


monotonic = time.perf_counter
"""Seconds from a monotonic clock, for measuring durations (the function itself: the engine
reads it once per policy and decision)."""
