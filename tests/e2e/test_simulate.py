"""`sendguard simulate` end to end: traffic recorded by a real server, replayed from its store."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_send_path import message, send
from tests.support.process import SENDGUARD, SendguardProcess

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

CAP = {"plugin": "frequency", "options": {"caps": [{"limit": 2, "window": "7d"}]}}


def simulate(proc: SendguardProcess, *args: str) -> subprocess.CompletedProcess[str]:
    candidate = proc.workdir / "candidate.yaml"
    # The candidate names the same store, so simulate reads it by default (read only).
    candidate.write_text(yaml.safe_dump({"store": proc.config["store"], "policies": [CAP]}))
    return subprocess.run(
        [SENDGUARD, "simulate", "--config", str(candidate), "--since", "1d", *args],
        cwd=proc.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_cap_reports_the_deliveries_it_would_have_delayed(
    sendguard: Start, tmp_path: Path
) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    for n in range(4):
        send(
            proc, ["ann@example.org"], message("X-Sendguard-Campaign: spring", subject=f"Sale {n}")
        )
    send(proc, ["bob@example.org"], message("X-Sendguard-Campaign: spring", subject="Sale 0"))
    assert set(proc.wait_settled().values()) == {"sent"}

    done = simulate(proc, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["deliveries"] == 5
    assert [(c["recipient"], c["subject"], c["then"], c["would"]) for c in report["changes"]] == [
        ("ann@example.org", "Sale 2", "forward", "delay"),
        ("ann@example.org", "Sale 3", "forward", "delay"),
    ]
    assert report["policies"][0]["policy"] == "frequency"
    assert report["policies"][0]["count"] == 2
    assert report["recipients"] == [{"recipient": "ann@example.org", "count": 2}]
    assert report["campaigns"] == [{"campaign": "spring", "count": 2}]

    page = tmp_path / "report.html"
    done = simulate(proc, "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert "ann@example.org: *Sale 2*" in page.read_text()

    done = simulate(proc)
    assert done.returncode == 0, done.stderr
    assert "frequency would delay: 2 deliveries" in done.stdout
    # Read only: the recorded history is as it was.
    assert set(proc.states().values()) == {"sent"}


def test_a_jsonl_export_without_a_server(tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    lines = [
        {
            "from": "shop@example.com",
            "to": "ann@example.org",
            "at": f"2026-11-0{d}T09:00:00Z",
            "headers": {"Subject": f"Sale {d}"},
        }
        for d in range(2, 6)
    ]
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump({"policies": [CAP]}))
    done = subprocess.run(
        [SENDGUARD, "simulate", "--config", str(candidate), "--store", str(export), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    changes = json.loads(done.stdout)["changes"]
    assert [c["subject"] for c in changes] == ["Sale 4", "Sale 5"]
    assert changes[0]["summary"].startswith("ann@example.org: *Sale 4* 2026-11-04 — forwarded then")

    export.write_text('{"from": "shop@example.com"}\n')
    done = subprocess.run(
        [SENDGUARD, "simulate", "--config", str(candidate), "--store", str(export)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "export.jsonl:1" in done.stderr
