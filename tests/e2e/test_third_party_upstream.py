"""docs/upstreams.md's third-party upstream is real: tests/upstream_pkg holds the very code the
doc shows (checked here, so the two cannot drift), installed as its own distribution by the
Makefile's venv step, and a message leaves through it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_http_api import send_json
from tests.support.process import SendguardProcess, base_config, run_with_config

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "upstreams.md"
PACKAGE = ROOT / "tests" / "upstream_pkg"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_shows_the_installed_example() -> None:
    (code,) = [b for b in _blocks("python") if b.startswith("# pigeon_upstream/__init__.py")]
    assert code == (PACKAGE / "pigeon_upstream" / "__init__.py").read_text()
    (entry_point,) = [b for b in _blocks("toml") if "sendguard.upstreams" in b]
    declared = entry_point.split("\n", 1)[1]  # below the "# pyproject.toml of ..." comment
    assert declared in (PACKAGE / "pyproject.toml").read_text()
    assert any("kind: pigeon" in b for b in _blocks("yaml"))
    assert 30 <= len(code.splitlines()) <= 60  # "a third-party upstream in ~40 lines"


def test_a_message_leaves_through_the_pigeon(sendguard: Start, tmp_path: Path) -> None:
    loft = tmp_path / "loft"
    loft.mkdir()
    config = base_config(None)
    config["upstream"] = {"kind": "pigeon", "options": {"loft": str(loft), "max_size": 4000}}
    (tmp_path / "check").mkdir()
    code, output = run_with_config("check-config", config, tmp_path / "check")
    assert code == 0, output
    proc = sendguard(config)
    status, ready = proc.http_get("/readyz")
    assert status == 200, ready

    light = send_json(proc, to=["Zoë@example.org"], subject="Light", text="a feather")
    heavy = send_json(proc, to=["ben@example.org"], subject="Heavy", text="x" * 5000)
    proc.wait_states({"Zoë@example.org": "sent", "ben@example.org": "failed"}, timeout=30)
    (delivery,) = light["deliveries"]
    carried = (loft / f"{delivery['id']}.eml").read_bytes()
    assert b"Subject: Light" in carried and b"a feather" in carried
    assert [p.name for p in loft.iterdir()] == [f"{delivery['id']}.eml"]
    (refused,) = heavy["deliveries"]
    _, answer = proc.call("GET", f"/v1/messages/{heavy['id']}")
    assert "too heavy for a pigeon" in str(answer), answer
    assert refused["recipient"] == "ben@example.org"
