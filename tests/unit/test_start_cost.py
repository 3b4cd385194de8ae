"""What a `sendguard serve` start does not need to pay for (session 12): the suite starts
hundreds of servers, and bench/start_cost.py measures each saving below."""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from typing import Any

import pytest

import sendguard.policy
from sendguard.config import load_config
from sendguard.suppression_enforcement import honouring_policies


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each entry point group is read (the real function, counted): each read goes
    through the entry points of every installed distribution."""
    counted: Counter[str] = Counter()
    real = importlib.metadata.entry_points

    def counting(**selection: Any) -> importlib.metadata.EntryPoints:
        counted[selection.get("group", "")] += 1
        return real(**selection)

    monkeypatch.setattr(sendguard.policy, "entry_points", counting)
    return counted


def test_the_configured_policies_are_found_in_one_read(scans: Counter[str]) -> None:
    settings = load_config(None)  # the embedded default: six policies
    assert len(settings.policies) == 6
    assert scans["sendguard.policies"] == 1


def test_the_suppression_warning_reads_the_installed_policies_once(scans: Counter[str]) -> None:
    assert "fatigue" in honouring_policies()
    assert scans["sendguard.policies"] == 1
