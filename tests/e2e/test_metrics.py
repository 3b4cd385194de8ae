"""`GET /metrics` of a real `sendguard serve`, read as Prometheus and its tools read it: one
registry without a name clash, the process's own families, build info, and counters that
exist (at 0) before the first event so rate() counts it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sendguard import __version__
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(proc: SendguardProcess) -> tuple[str, list[Any], Samples]:
    status, body = proc.http_get("/metrics")
    assert status == 200
    text = body.decode()
    families = list(text_string_to_metric_families(text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return text, families, samples


def test_metrics_are_valid_prometheus_text(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    msg_id = send(proc, ["m@example.org"], message())
    proc.wait_states({"m@example.org": "sent"}, msg_id)
    _, families, samples = scrape(proc)
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family is exposed twice"
    kinds = {f.name: f.type for f in families}
    assert kinds["sendguard_deliveries"] == "counter"
    assert kinds["sendguard_deliveries_in_state"] == "gauge"
    for name in (
        "sendguard_messages_received",
        "sendguard_decisions",
        "sendguard_policy_duration_seconds",
        "sendguard_ingress_duration_seconds",
        "sendguard_upstream_duration_seconds",
        "sendguard_upstream_errors",
    ):
        assert name in kinds, name
    assert samples[("sendguard_messages_received_total", (("ingress", "smtp"),))] == 1
    assert samples[("sendguard_deliveries_total", (("outcome", "sent"),))] == 1
    assert samples[("sendguard_deliveries_in_state", (("state", "sent"),))] == 1
    decided = ("mode", "enforce"), ("policy", "schedule"), ("verdict", "forward")
    assert samples[("sendguard_decisions_total", decided)] == 1


def test_a_delivery_dropped_at_intake_is_counted_as_dropped(sendguard: Start, sink: Sink) -> None:
    policies = [{"plugin": "block_domain", "options": {"domains": ["blocked.example"]}}]
    proc = sendguard(policies=policies)
    msg_id = send(proc, ["no@blocked.example", "yes@example.org"], message())
    proc.wait_states({"no@blocked.example": "dropped", "yes@example.org": "sent"}, msg_id)
    _, _, samples = scrape(proc)
    assert samples[("sendguard_deliveries_total", (("outcome", "dropped"),))] == 1
    assert samples[("sendguard_deliveries_total", (("outcome", "sent"),))] == 1
    assert samples[("sendguard_deliveries_in_state", (("state", "dropped"),))] == 1


def test_process_families_and_build_info(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    _, families, samples = scrape(proc)
    kinds = {f.name: f.type for f in families}
    for name in (
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
    ):
        assert name in kinds, name
    assert samples[("process_resident_memory_bytes", ())] > 0
    build = (
        ("implementation", platform.python_implementation()),
        ("python", platform.python_version()),
        ("version", __version__),
    )
    assert samples[("sendguard_build_info", build)] == 1


def test_counters_exist_at_zero_before_the_first_event(sendguard: Start, sink: Sink) -> None:
    config_policies = [
        {"plugin": "schedule"},
        {"plugin": "repetition", "mode": "shadow", "options": {"limit": 2, "window": "1d"}},
    ]
    proc = sendguard(policies=config_policies)
    _, _, samples = scrape(proc)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    for ingress in ("smtp", "http", "sendgrid", "postmark", "mailgun"):
        assert value("sendguard_messages_received_total", ingress=ingress) == 0
    for outcome in ("sent", "deferred", "failed", "dropped"):
        assert value("sendguard_deliveries_total", outcome=outcome) == 0
    for state in ("queued", "delayed", "held", "sending", "sent", "deferred", "failed", "dropped"):
        assert value("sendguard_deliveries_in_state", state=state) == 0
    for verdict in ("forward", "delay", "hold", "drop"):
        assert (
            value("sendguard_decisions_total", policy="schedule", verdict=verdict, mode="enforce")
            == 0
        )
        assert (
            value("sendguard_decisions_total", policy="repetition", verdict=verdict, mode="shadow")
            == 0
        )
    assert value("sendguard_policy_errors_total", policy="repetition") == 0
    assert value("sendguard_policy_duration_seconds_count", policy="schedule") == 0
    upstreams = {labels for name, labels in samples if name == "sendguard_upstream_errors_total"}
    assert {dict(labels)["kind"] for labels in upstreams} == {
        "transient",
        "permanent",
        "unexpected",
    }
    assert all(samples[("sendguard_upstream_errors_total", labels)] == 0 for labels in upstreams)
    (upstream,) = {dict(labels)["upstream"] for labels in upstreams}
    assert value("sendguard_upstream_duration_seconds_count", upstream=upstream) == 0
    assert value("sendguard_webhook_events_total", outcome="abandoned") == 0


def test_a_reload_adds_the_series_of_new_policies_and_upstreams(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    proc.config["policies"] = [{"plugin": "schedule"}, {"plugin": "fatigue"}]
    proc.config["upstreams"] = {"spare": {"kind": "outbox", "path": "var/spare"}}
    proc.config["routes"] = [{"campaign": "spring", "upstream": "spare"}]
    proc.config_path.write_text(yaml.safe_dump(proc.config))
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    _, _, samples = scrape(proc)
    fatigue = ("mode", "enforce"), ("policy", "fatigue"), ("verdict", "drop")
    assert samples[("sendguard_decisions_total", fatigue)] == 0
    spare = {
        dict(labels)["upstream"]
        for name, labels in samples
        if name.startswith("sendguard_upstream_errors")
    }
    assert len(spare) == 2, spare


@pytest.mark.parametrize("workers", ["1", "2"])
def test_promtool_finds_no_problem_in_a_scrape(sendguard: Start, sink: Sink, workers: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus); .ci/run installs it")
    # Under workers the process families are the service's own collector's (service_process).
    proc = sendguard(serve_args=["--workers", workers] if workers != "1" else [])
    send(proc, ["p@example.org"], message())
    proc.wait_settled()
    text, _, _ = scrape(proc)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (what process_cpu_seconds_total counts)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[21]) * os.sysconf("SC_PAGESIZE")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_process_metrics_under_two_workers_cover_the_whole_service(sendguard: Start) -> None:
    # A Prometheus user reads process_cpu_seconds_total as the service's CPU: under
    # --workers 2 it was the answering worker's alone.
    proc = sendguard(serve_args=["--workers", "2"])
    workers = proc.worker_pids()
    assert len(workers) == 2
    spent = sum(_cpu_seconds(pid) for pid in workers)
    largest = max(_rss_bytes(pid) for pid in workers)
    status, body = proc.http_get("/metrics")
    assert status == 200
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if not s.labels
    }
    assert samples["process_cpu_seconds_total"] >= spent, (samples, spent)
    assert samples["process_resident_memory_bytes"] > largest, (samples, largest)
