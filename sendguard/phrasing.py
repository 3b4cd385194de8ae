"""How durations and moments read in reasons, for the people who read them.

Config and headers keep their exact notation (`sendguard.duration`: `90s`, `1h30m`); a reason
is read by a marketer in the timeline or the review queue, so it says "3 days", not
"3d1s68ms", and gives a moment in the recipient's own time zone with UTC beside it:
"2026-12-03 07:25 America/New_York, 12:25 UTC".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["human_duration", "human_time"]

_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


@lru_cache(maxsize=256)
def human_duration(value: timedelta) -> str:
    """`value` rounded to its two largest units: "3 days", "1 hour 30 minutes", "2 seconds".

    Remembered: most reasons name the same few configured windows ("1 day", "7 days") for
    every delivery.
    """
    seconds = value.total_seconds()
    if seconds < 0:
        return human_duration(-value)
    if seconds < 1:
        millis = round(seconds * 1000)
        return "no time" if millis == 0 else _count(millis, "millisecond")
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} seconds".replace(".0 ", " ")
    for i, (unit, size) in enumerate(_UNITS):
        if seconds < size:
            continue
        if i + 1 == len(_UNITS):
            return _count(round(seconds), unit)
        small_unit, small_size = _UNITS[i + 1]
        smalls = round(seconds / small_size)
        if i > 0 and smalls * small_size >= _UNITS[i - 1][1]:
            # Rounding carried into the larger unit: 23 h 59 min 40 s reads "1 day".
            return human_duration(timedelta(seconds=smalls * small_size))
        big, rest = divmod(smalls, size // small_size)
        return _count(big, unit) + (f" {_count(rest, small_unit)}" if rest else "")
    raise AssertionError("unreachable: seconds >= 1 matches the unit 'second'")


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


def human_time(at: datetime, zone: tzinfo | None = None) -> str:
    """A moment for people: in `zone` with UTC beside it, or in UTC alone.

    The date is given once, in front (the UTC part repeats it only when the day differs there).
    """
    utc = at.astimezone(UTC)
    if zone is None or _is_utc(zone):
        return f"{utc:%Y-%m-%d} {_clock(utc)} UTC"
    local = at.astimezone(zone)
    name = zone.key if isinstance(zone, ZoneInfo) else local.tzname() or str(zone)
    utc_part = _clock(utc) if utc.date() == local.date() else f"{utc:%Y-%m-%d} {_clock(utc)}"
    return f"{local:%Y-%m-%d} {_clock(local)} {name}, {utc_part} UTC"


_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Zulu"})


def _is_utc(zone: tzinfo) -> bool:
    return zone is UTC or (isinstance(zone, ZoneInfo) and zone.key in _UTC_NAMES)
