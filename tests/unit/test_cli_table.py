"""The CLI's tables and its reading of why a delivery is held."""

from __future__ import annotations

from sendguard.cli import held_for
from sendguard.client import table


def test_a_table_fits_the_width_by_cutting_the_widest_column() -> None:
    rows = [["01J9ZX", "ann@example.org", "x" * 200]]
    text = table(["ID", "RECIPIENT", "REASONS"], rows, fit=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "01J9ZX" in text and "ann@example.org" in text and text.endswith("…")


def test_without_fit_nothing_is_cut() -> None:
    rows = [["1", "x" * 300]]
    assert ("x" * 300) in table(["ID", "WHY"], rows)


def test_held_for_lists_every_hold_of_the_latest_decision() -> None:
    delivery = {
        "reason": "human_hold: campaign spring is not approved yet",
        "reasons": [
            {
                "at": "T1",
                "policy": "context",
                "verdict": "hold",
                "mode": "enforce",
                "reason": "old",
            },
            {
                "at": "T2",
                "policy": "frequency",
                "verdict": "forward",
                "mode": "enforce",
                "reason": "within every cap",
            },
            {
                "at": "T2",
                "policy": "human_hold",
                "verdict": "hold",
                "mode": "enforce",
                "reason": "campaign spring is not approved yet",
            },
            {
                "at": "T2",
                "policy": "patterns",
                "verdict": "hold",
                "mode": "enforce",
                "reason": "content matches 'free'",
            },
            {
                "at": "T2",
                "policy": "shadowy",
                "verdict": "hold",
                "mode": "shadow",
                "reason": "would hold",
            },
        ],
    }
    assert held_for(delivery) == (
        "human_hold: campaign spring is not approved yet; patterns: content matches 'free'"
    )


def test_held_for_falls_back_to_the_delivery_reason() -> None:
    assert held_for({"reason": "campaign-pause: paused", "reasons": []}) == (
        "campaign-pause: paused"
    )
