"""What a `sendguard serve` start does not need to pay for (session 12): the suite starts
hundreds of servers, and bench/start_cost.py measures each saving below."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

import sendguard.policy
from sendguard.config import load_config
from sendguard.suppression_enforcement import honouring_policies
from tests.unit.test_cli_light import modules_after


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


def test_a_server_loads_neither_the_review_templates_nor_cryptography() -> None:
    """Jinja2 is loaded by the first review page shown, cryptography by the first SendGrid
    webhook (tests/e2e/test_review_page.py and test_esp_webhooks.py show they still work)."""
    loaded = modules_after("import sendguard.app, sendguard.cli")
    assert "sendguard.app" in loaded
    lazy = ("jinja2", "aiohttp_jinja2", "cryptography")
    assert not {name for name in loaded if name.split(".")[0] in lazy}


def test_structlog_is_imported_without_rich_which_stays_importable() -> None:
    """rich (in the test extras through schemathesis) is not loaded by a server, whose
    console lines print plain tracebacks either way; whoever imports it later gets it."""
    probe = (
        "import sys, sendguard.logs, sendguard.app\n"
        "loaded = sorted(sys.modules)\n"
        "import rich, structlog.dev\n"
        "assert structlog.dev.default_exception_formatter is structlog.dev.plain_traceback\n"
        "print('\\n'.join(loaded))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(done.stdout.split())
    assert "structlog" in loaded
    assert not {name for name in loaded if name.split(".")[0] in ("rich", "pygments")}


def test_the_time_zone_names_are_read_for_the_openapi_document_only() -> None:
    probe = (
        "import zoneinfo\n"
        "reads = []\n"
        "real = zoneinfo.available_timezones\n"
        "zoneinfo.available_timezones = lambda: reads.append(1) or real()\n"
        "import sendguard.app\n"
        "assert not reads, 'read at import'\n"
        "from sendguard.ingress.openapi import document\n"
        "from sendguard.ingress.routes import ROUTES\n"
        "assert 'Europe/Berlin' in str(document(ROUTES)) and reads\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
