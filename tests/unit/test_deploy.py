"""deploy/: the alert rules pass promtool, every metric the rules and the dashboard use exists,
the compose file validates where docker compose runs, and the instances' config is valid."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sendguard.config import parse_config
from sendguard.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool is not installed (Debian package prometheus); .ci/run installs it")
    checked = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def known_series() -> set[str]:
    metrics = Metrics()
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        suffixes = ("_total", "_bucket", "_count", "_sum")
        names |= {f"{family.name}{suffix}" for suffix in suffixes}
    return names


def used_series(text: str) -> set[str]:
    return set(re.findall(r"\bsendguard_[a-z_]+", text))


def test_rules_and_dashboard_use_only_metrics_sendguard_exports() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sendguard.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    unknown = (used_series(exprs) | used_series(queries)) - known_series()
    assert unknown == set()
    assert len(dashboard["panels"]) >= 10
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "SendguardStoreUnavailable",
        "SendguardHeldPastExpiry",
        "SendguardUpstreamFailing",
        "SendguardDispatcherLag",
    } <= names


def test_the_instances_config_is_valid() -> None:
    environ = {
        "SENDGUARD_API_TOKEN": "a-token",
        "SENDGUARD_STORE_URL": "postgresql://sendguard:sendguard@postgres:5432/sendguard",
    }
    settings = parse_config((DEPLOY / "sendguard.yaml").read_text(), "deploy", environ)
    assert settings.config.store.url.startswith("postgresql://")


def test_compose_file_validates() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"postgres", "sendguard-a", "sendguard-b", "prometheus", "grafana"} <= set(
        compose["services"]
    )
    compose_command = compose_tool()
    if compose_command is None:
        if os.environ.get("CI"):
            pytest.fail(
                "docker compose is missing in CI (.ci/run installs Debian's docker-compose)"
            )
        pytest.skip("neither docker compose nor docker-compose is here; checked as YAML only")
    file = str(DEPLOY / "docker-compose.yml")
    checked = subprocess.run(
        [*compose_command, "-f", file, "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "SENDGUARD_API_TOKEN": "a-token"},
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    # The token is required: without it the file says how to set it, before anything starts.
    unset = {k: v for k, v in os.environ.items() if k != "SENDGUARD_API_TOKEN"}
    refused = subprocess.run(
        [*compose_command, "-f", file, "config", "--quiet"],
        capture_output=True,
        text=True,
        env=unset,
        check=False,
    )
    assert refused.returncode != 0
    assert "set SENDGUARD_API_TOKEN" in refused.stderr


def compose_tool() -> list[str] | None:
    """`docker compose` (v2) where it runs, else Debian's `docker-compose` (v1, needs no
    daemon to validate); None when neither is here. `docker compose up` needs a Docker
    daemon, which the test machine does not run."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 is not None else None
