"""Meta-tests: every built-in policy is documented and has an end-to-end test."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def builtin_policies() -> list[str]:
    return sorted(
        ep.name
        for ep in entry_points(group="sendguard.policies")
        if ep.value.startswith("sendguard_plugins.")
    )


def test_there_are_builtin_policies() -> None:
    assert "schedule" in builtin_policies()


def test_every_builtin_policy_is_documented() -> None:
    docs = (ROOT / "docs" / "policies.md").read_text()
    missing = [name for name in builtin_policies() if f"\n## {name}\n" not in docs]
    assert missing == [], f"docs/policies.md has no section for {missing}"


def test_every_builtin_policy_has_an_end_to_end_test() -> None:
    missing = [
        name
        for name in builtin_policies()
        if not (ROOT / "tests" / "e2e" / f"test_policy_{name}.py").exists()
    ]
    assert missing == [], f"no tests/e2e/test_policy_<name>.py for {missing}"
