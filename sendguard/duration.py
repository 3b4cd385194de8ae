"""Durations as people write them in config and headers: `90s`, `15m`, `24h`, `7d`, `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "HINT",
    "MAX_DURATION",
    "PATTERN",
    "Duration",
    "format_duration",
    "parse_duration",
    "parse_window",
]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
PATTERN = f"^{_WHOLE.pattern}$"
"""A duration as a JSON-schema pattern (lower case, no spaces: the form documented)."""
HINT = "a number with a unit, like 90s, 15m, 24h or 7d (units: ms, s, m, h, d, w)"
MAX_DURATION = timedelta(days=3650)
"""The longest duration accepted anywhere (about ten years): longer ones are typing mistakes,
and past timedelta's range they would not even be computable."""


def parse_duration(text: str) -> timedelta:
    """Parse `text` into a timedelta; raise ValueError naming the accepted form.

    Durations are bounded by MAX_DURATION, so adding one to a time never overflows.
    """
    seconds = _seconds(text)
    if not seconds <= MAX_DURATION.total_seconds():  # also catches inf and nan
        raise ValueError(f"{text!r} is longer than the maximum of 3650d (about ten years)")
    return timedelta(seconds=seconds)


def parse_window(text: str) -> timedelta:
    """A look-back window (`since=30d`): a duration as `parse_duration` reads it, where one
    longer than MAX_DURATION means all of history, that is MAX_DURATION."""
    seconds = _seconds(text)
    return timedelta(seconds=seconds) if seconds < MAX_DURATION.total_seconds() else MAX_DURATION


def _seconds(text: str) -> float:
    compact = text.strip().lower().replace(" ", "")
    if not compact or not _WHOLE.fullmatch(compact):
        raise ValueError(f"{text!r} is not a duration: use {HINT}")
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(compact))


def format_duration(value: timedelta) -> str:
    """The exact spelling of `value` in the same notation, largest units first (`1h30m`)."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):  # no weeks: "30d" reads better than "4w2d"
        size = round(_UNITS[unit] * 1_000_000)
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        parts.append(f"{micros / 1000:g}ms")
    return "".join(parts)


def _validate(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected {HINT}, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(_validate), PlainSerializer(format_duration)]
"""A pydantic field type for durations written as `90s`, `15m`, `24h`, `7d`."""
