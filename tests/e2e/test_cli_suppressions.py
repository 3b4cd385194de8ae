"""`sendguard suppressions list|add|import|lift` against a running server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_cli_review import cli
from tests.support.process import SendguardProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def test_suppressions_commands(sendguard: Start, tmp_path: Path) -> None:
    proc = sendguard(policies=[{"plugin": "fatigue"}])
    out = cli(proc, "suppressions", "list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no suppressions"

    out = cli(
        proc, "suppressions", "add", "Eve@Example.org", "--reviewer", "ana", "--note", "asked"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("eve@example.org: suppressed (manual since ")

    export = tmp_path / "postmark.csv"
    export.write_text(
        "Email Address,Reason,Created At\n"
        "ivy@example.org,HardBounce,2025-03-01T10:00:00Z\n"
        "eve@example.org,ManualSuppression,2025-03-01T10:00:00Z\n"
        "broken,SpamComplaint,2025-03-01T10:00:00Z\n"
    )
    out = cli(proc, "suppressions", "import", str(export), "--reviewer", "ana")
    assert out.returncode == 1, out.stderr  # a row was not imported: a script must notice
    assert out.stdout.splitlines()[0] == "1 added, 1 already present, 1 invalid"
    assert out.stdout.splitlines()[1].startswith("  line 4: ")

    out = cli(proc, "suppressions", "list", "--reason", "bounce", "--json")
    (ivy,) = json.loads(out.stdout)["suppressions"]
    assert ivy["address"] == "ivy@example.org"
    assert ivy["source"] == "import:postmark.csv (reviewer ana)"
    assert ivy["created_by"] == "token-1"  # the authenticated identity, not the claimed one
    out = cli(proc, "suppressions", "list")
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ADDRESS", "REASON", "SOURCE", "SINCE", "BY"]
    assert [line.split()[0] for line in lines[1:]] == ["eve@example.org", "ivy@example.org"]

    out = cli(proc, "suppressions", "lift", "ivy@example.org", "--reviewer", "bob")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ivy@example.org: lifted (was bounce)"
    out = cli(proc, "suppressions", "lift", "ivy@example.org", "--reviewer", "bob")
    assert out.returncode == 1 and "404" in out.stderr
    out = cli(proc, "suppressions", "import", str(tmp_path / "missing.csv"))
    assert out.returncode == 1 and "cannot read" in out.stderr
