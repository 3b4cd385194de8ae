"""The retention log line reads as the config is written: durations, not seconds."""

from __future__ import annotations

from datetime import timedelta

from sendguard.retention import Horizons


def test_horizons_are_logged_as_durations() -> None:
    horizons = Horizons(
        deliveries=timedelta(days=90),
        history=timedelta(days=90, hours=12),
        events=None,
        facts=timedelta(days=7),
        idempotency=timedelta(hours=24),
    )
    assert horizons.describe() == {
        "deliveries": "90d",
        "history": "90d12h",
        "events": "forever",
        "facts": "7d",
        "idempotency": "1d",
    }
