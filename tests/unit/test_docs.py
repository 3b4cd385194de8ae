"""Meta-tests: every built-in policy is documented and has an end-to-end test; the plugin
guide documents every PolicyContext member and its example runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sendguard.policy import PolicyContext
from sendguard.store.sqlite import SQLiteStore

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


def test_every_policy_context_member_is_documented(tmp_path: Path) -> None:
    ctx = PolicyContext(SQLiteStore(tmp_path / "unopened.db"), datetime(2026, 1, 1, tzinfo=UTC))
    members = [name for name in dir(ctx) if not name.startswith("_")]
    assert "now" in members and "fact" in members
    docs = (ROOT / "docs" / "plugins.md").read_text()
    missing = [
        name for name in members if f"`ctx.{name}`" not in docs and f"ctx.{name}(" not in docs
    ]
    assert missing == [], f"docs/plugins.md does not document PolicyContext.{missing}"


async def test_the_plugin_example_and_its_test_run() -> None:
    """docs/plugins.md's policy and its PolicyHarness test, run as written."""
    docs = (ROOT / "docs" / "plugins.md").read_text()
    # The section on adding a message field shows a fragment (tests/unit/test_field_table.py
    # runs it in a fresh interpreter: it changes sendguard's tables at import).
    policies = docs.split("## Adding a message field")[0]
    blocks = re.findall(r"```python\n(.*?)```", policies, re.DOTALL)
    assert len(blocks) == 2, "docs/plugins.md should show the policy, then its test"
    namespace: dict[str, Any] = {"__name__": "docs_plugins_example"}
    for block in blocks:
        exec(compile(block, "docs/plugins.md", "exec"), namespace)
    await namespace["test_block_domain"]()
