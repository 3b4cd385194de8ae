"""`serve` keeps glibc from trimming its arenas after every message (sendguard/malloc_tuning.py)."""

from __future__ import annotations

import pytest

from sendguard import malloc_tuning


def test_sets_the_trim_threshold_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert malloc_tuning.keep_freed_memory()  # this machine's C library is glibc


def test_an_operators_threshold_from_the_environment_stands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert not malloc_tuning.keep_freed_memory()
