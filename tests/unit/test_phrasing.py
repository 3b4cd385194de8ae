"""Durations and moments as people read them in reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sendguard.phrasing import human_duration, human_time


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=3, seconds=1, microseconds=68_200), "3 days"),
        (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
        (timedelta(days=1), "1 day"),
        (timedelta(days=7), "7 days"),
        (timedelta(days=30), "30 days"),
        (timedelta(hours=23, minutes=59, seconds=40), "1 day"),
        (timedelta(hours=25, minutes=10), "1 day 1 hour"),
        (timedelta(minutes=59, seconds=50), "59 minutes 50 seconds"),
        (timedelta(minutes=59, seconds=59, milliseconds=700), "1 hour"),
        (timedelta(seconds=2), "2 seconds"),
        (timedelta(seconds=1), "1 second"),
        (timedelta(seconds=1.5), "1.5 seconds"),
        (timedelta(seconds=15), "15 seconds"),
        (timedelta(seconds=90), "1 minute 30 seconds"),
        (timedelta(milliseconds=450), "450 milliseconds"),
        (timedelta(0), "no time"),
        (timedelta(seconds=-90), "1 minute 30 seconds"),
    ],
)
def test_durations_are_rounded_for_people(value: timedelta, text: str) -> None:
    assert human_duration(value) == text


def test_a_moment_in_the_recipients_zone_has_utc_beside_it() -> None:
    at = datetime(2026, 12, 3, 12, 25, tzinfo=UTC)
    assert human_time(at, ZoneInfo("America/New_York")) == (
        "2026-12-03 07:25 America/New_York, 12:25 UTC"
    )


def test_the_utc_date_is_repeated_when_it_differs() -> None:
    at = datetime(2026, 12, 4, 2, 25, tzinfo=UTC)
    assert human_time(at, ZoneInfo("America/New_York")) == (
        "2026-12-03 21:25 America/New_York, 2026-12-04 02:25 UTC"
    )


def test_without_a_zone_a_moment_is_in_utc_and_seconds_show_only_when_set() -> None:
    assert human_time(datetime(2026, 12, 3, 12, 25, tzinfo=UTC)) == "2026-12-03 12:25 UTC"
    at = datetime(2026, 12, 3, 12, 25, 7, tzinfo=UTC)
    assert human_time(at, ZoneInfo("UTC")) == "2026-12-03 12:25:07 UTC"


def test_a_zone_without_offset_keeps_its_name() -> None:
    at = datetime(2026, 12, 3, 12, 25, tzinfo=UTC)
    assert (
        human_time(at, ZoneInfo("Africa/Abidjan")) == "2026-12-03 12:25 Africa/Abidjan, 12:25 UTC"
    )
