"""`sendguard serve --workers N`: several processes, one listener pair, one store, one answer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import smtplib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sendguard.password import hash_password
from sendguard.workers import RELOAD_TIMEOUT, default_workers
from tests.e2e.test_send_path import message, send
from tests.support.process import (
    SENDGUARD,
    TOKEN,
    SendguardProcess,
    alive,
    base_config,
    children,
    free_port,
    stopped,
    wait_gone,
)
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]
TWO = ["--workers", "2"]


def received_total(proc: SendguardProcess) -> float:
    status, body = proc.http_get("/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "sendguard_messages_received":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def wait_workers(proc: SendguardProcess, count: int, timeout: float = 20.0) -> list[int]:
    """The pids of `count` workers, once each has started and done its first store work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = proc.worker_pids()
        events = [e.get("event") for e in proc.log_events()]
        ready = min(events.count("sendguard started"), events.count("retention: pruned"))
        if len(pids) == count and ready >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"workers {proc.worker_pids()}, wanted {count}\n{proc.log()[-3000:]}")


def one_through_each_worker(proc: SendguardProcess, prefix: str, body: bytes) -> None:
    """`body` to `<prefix>0@example.org` through one worker, `<prefix>1@...` through the other
    (one connection to each worker)."""
    for n, client in enumerate(proc.smtp_clients(2)):
        with client:
            client.sendmail("shop@example.com", [f"{prefix}{n}@example.org"], body)


HOLD_CAMPAIGNS = {"plugin": "human_hold", "options": {"max_blast": None}}
CAMPAIGN = message("X-Sendguard-Campaign: spring")

# Nothing polls the store meanwhile, so a worker stopped between sends holds no store lock.
QUIET = {"poll_interval": "30s", "workers": 4, "min_backoff": "1s", "max_backoff": "2s"}


def test_two_workers_each_serve_the_send_path_and_one_scrape_sums_both(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(serve_args=TWO, delivery=QUIET)
    first, second = wait_workers(proc, 2)
    # Each worker alone (the other stopped) takes mail and answers the API.
    # Each phase ends settled (the sends recorded), so no worker is stopped mid-write.
    with stopped(second):
        send(proc, ["one@example.org"], message(subject="via first"))
        sink.wait_for(1, timeout=20)
        proc.wait_settled()
    with stopped(first):
        send(proc, ["two@example.org"], message(subject="via second"))
        send(proc, ["three@example.org"], message(subject="via second again"))
        sink.wait_for(3, timeout=20)
        proc.wait_settled()
        # Answered by the second worker: the first one's count is in it.
        assert received_total(proc) == 3
    with stopped(second):
        assert received_total(proc) == 3
    assert {r.message["Subject"] for r in sink.received} == {
        "via first",
        "via second",
        "via second again",
    }
    assert proc.wait_settled() == {
        "one@example.org": "sent",
        "two@example.org": "sent",
        "three@example.org": "sent",
    }


def test_the_scrape_of_two_workers_passes_promtool(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(serve_args=TWO)
    wait_workers(proc, 2)
    for n in range(4):
        send(proc, [f"r{n}@example.org"], message(subject=f"m{n}"))
    sink.wait_for(4, timeout=20)
    # The sink has a message before its `sent` is recorded: read the metrics after that.
    assert set(proc.wait_settled().values()) == {"sent"}
    status, body = proc.http_get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    # One series per label set: summed, not one per worker.
    received = [
        (s.labels["ingress"], s.value)
        for s in families["sendguard_messages_received"].samples
        if s.name.endswith("_total")
    ]
    assert len(received) == len({ingress for ingress, _ in received})
    assert dict(received)["smtp"] == 4
    states = {s.labels["state"]: s.value for s in families["sendguard_deliveries_in_state"].samples}
    assert states["sent"] == 4
    promtool = shutil.which("promtool")
    if promtool is None:  # the sums above were checked
        pytest.skip("promtool is not installed (Debian package prometheus); .ci/run installs it")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_kill9_of_a_worker_under_load_loses_nothing_answered_250(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(serve_args=TWO, delivery={"lease": "30s"})
    victim, survivor = wait_workers(proc, 2)
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(40):
            subject = f"load {n}-{i}"
            try:
                with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=20) as smtp:
                    smtp.sendmail(
                        "shop@example.com", [f"r{n}@example.org"], message(subject=subject)
                    )
            except (smtplib.SMTPException, OSError):
                with lock:
                    refused.append(subject)
                continue
            with lock:
                accepted.append(subject)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(accepted) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join()
    assert len(accepted) + len(refused) == 240
    assert len(accepted) > 40
    # Everything answered 250 arrives, whoever had taken it: what the victim had claimed
    # when it died is claimed again once its lease (30 s) ends. Wait for each subject, not
    # for a count (duplicates reach a count first) nor for settled states (those are the
    # latest delivery per recipient, and each client writes to one recipient 40 times).
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        arrived = [r.message["Subject"] for r in sink.received]
        if set(accepted) <= set(arrived):
            break
        time.sleep(0.1)
    proc.wait_settled(timeout=60)
    arrived = [r.message["Subject"] for r in sink.received]
    assert set(accepted) <= set(arrived), sorted(set(accepted) - set(arrived))
    # At least once: a send the victim had made but not yet recorded is made again, so at
    # most its in-flight sends (delivery.workers) arrive twice; nothing more often.
    repeated = [s for s in set(arrived) if arrived.count(s) > 1]
    assert len(repeated) <= 4, repeated
    assert all(arrived.count(s) == 2 for s in repeated)
    # The supervisor replaced the dead worker.
    pids = wait_workers(proc, 2)
    assert survivor in pids
    assert victim not in pids
    assert any(e.get("event") == "worker died; starting another" for e in proc.log_events())


def test_sigterm_drains_every_worker_and_exits_0(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(serve_args=TWO)
    pids = wait_workers(proc, 2)
    for n in range(3):
        send(proc, [f"r{n}@example.org"], message(subject=f"m{n}"))
    assert proc.terminate(timeout=30) == 0
    wait_gone(pids)
    assert not any(alive(pid) for pid in pids)
    events = [e.get("event") for e in proc.log_events()]
    assert events.count("draining") == 2
    assert events.count("stopped") == 2
    assert "workers stopped" in events
    proc.start()  # the ports and the store are free again
    sink.wait_for(3, timeout=20)


def audit_entries(proc: SendguardProcess, action: str) -> list[dict[str, Any]]:
    status, answer = proc.call("GET", "/v1/audit")
    assert status == 200, answer
    return [e for e in answer["entries"] if e["action"] == action]


def held_config(proc: SendguardProcess) -> str:
    """Write the server's config with unapproved campaigns held; its sha256."""
    config = {**proc.config, "policies": [*proc.config["policies"], HOLD_CAMPAIGNS]}
    text = yaml.safe_dump(config)
    proc.config_path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_sighup_reloads_every_worker_and_is_audited_once(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(serve_args=TWO)
    wait_workers(proc, 2)
    assert proc.proc is not None
    digest = held_config(proc)
    proc.proc.send_signal(signal.SIGHUP)
    # The one audit entry is written once every worker has answered.
    deadline = time.monotonic() + 30
    while not (entries := audit_entries(proc, "reload")):
        assert time.monotonic() < deadline, proc.log()[-3000:]
        time.sleep(0.05)
    [entry] = entries
    assert entry["actor"] == "signal:SIGHUP"
    assert digest in entry["note"] and "2 workers" in entry["note"], entry["note"]
    assert "NOT reloaded" not in entry["note"]
    reloads = [e for e in proc.log_events() if e.get("event") == "config reloaded"]
    assert sorted(e["actor"] for e in reloads) == ["signal:SIGHUP"] * 2
    assert {e["hash"] for e in reloads} == {digest}
    one_through_each_worker(proc, "r", CAMPAIGN)
    assert proc.wait_states({"r0@example.org": "held", "r1@example.org": "held"})


def test_an_api_reload_answers_once_every_worker_runs_the_new_config(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(serve_args=TWO)
    pids = wait_workers(proc, 2)
    digest = held_config(proc)
    status, answer = proc.call("POST", "/v1/admin/reload")
    assert status == 200, answer
    assert answer["reloaded"] is True
    assert answer["hash"] == digest
    assert sorted(w["pid"] for w in answer["workers"]) == pids
    assert all(w["reloaded"] and w["hash"] == digest for w in answer["workers"]), answer
    assert [e["actor"] for e in audit_entries(proc, "reload")] == ["token-1"]
    # At once, whichever worker takes the next message runs the new config.
    one_through_each_worker(proc, "r", CAMPAIGN)
    assert proc.states() == {"r0@example.org": "held", "r1@example.org": "held"}


def test_a_reload_names_a_worker_that_did_not_answer(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(serve_args=TWO, delivery=QUIET)
    running, hung = wait_workers(proc, 2)
    digest = held_config(proc)
    with stopped(hung):
        started = time.monotonic()
        url = f"http://127.0.0.1:{proc.http_port}"
        done = subprocess.run(
            [SENDGUARD, "reload", "--json", "--url", url, "--token", TOKEN],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        waited = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["reloaded"] is False
    assert answer["workers"] == [
        {"pid": running, "reloaded": True, "hash": digest, "error": None},
        {"pid": hung, "reloaded": False, "hash": None, "error": "no answer within 10 s"},
    ]
    assert waited >= RELOAD_TIMEOUT
    [entry] = audit_entries(proc, "reload")
    assert f"NOT reloaded everywhere: worker {hung}: no answer within 10 s" in entry["note"]
    # Woken, the late worker still reloads (its answer comes too late to count).
    deadline = time.monotonic() + 30
    while len([e for e in proc.log_events() if e.get("event") == "config reloaded"]) < 2:
        assert time.monotonic() < deadline, proc.log()[-3000:]
        time.sleep(0.05)


def test_a_second_serve_on_the_same_sqlite_file_is_refused(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    proc = sendguard(serve_args=TWO)
    wait_workers(proc, 2)
    other = tmp_path / "other.yaml"
    text = proc.config_path.read_text()
    other.write_text(
        text.replace(str(proc.smtp_port), str(free_port())).replace(
            str(proc.http_port), str(free_port())
        )
    )
    for workers in ("1", "2"):
        out = subprocess.run(
            [SENDGUARD, "serve", "--config", str(other), "--workers", workers],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert out.returncode == 1, out.stdout + out.stderr
        assert "in use by another sendguard process" in out.stderr
    # The running one is unharmed.
    send(proc, ["still@example.org"], message())
    sink.wait_for(1, timeout=20)


def test_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    out = subprocess.run(
        [SENDGUARD, "serve", "--workers", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 2
    assert "--workers: '0' is not a number of workers from 1 to 256" in out.stderr


def test_a_pause_set_through_one_worker_holds_what_every_worker_accepts(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(serve_args=TWO)
    wait_workers(proc, 2)
    # Each worker reads the pause (not paused) before it is set: a cached answer would stay.
    one_through_each_worker(proc, "before", message())
    sink.wait_for(2, timeout=20)
    status, answer = proc.call("POST", "/v1/pause", {"note": "incident"})
    assert status == 200 and answer["paused"] is True
    one_through_each_worker(proc, "after", message())
    states = proc.wait_states({"after0@example.org": "held", "after1@example.org": "held"})
    assert states["before0@example.org"] == states["before1@example.org"] == "sent"
    assert len(sink.received) == 2


def test_a_campaign_approved_through_one_worker_flows_through_every_worker(
    sendguard: Start, sink: Sink
) -> None:
    # Each worker keeps the campaign's decision it read (settings_version.py): the approval,
    # written by one, must reach the other before the API answers.
    proc = sendguard(serve_args=TWO, policies=[{"plugin": "schedule"}, HOLD_CAMPAIGNS])
    wait_workers(proc, 2)
    one_through_each_worker(proc, "before", CAMPAIGN)
    assert proc.wait_states({"before0@example.org": "held", "before1@example.org": "held"})
    status, answer = proc.call("POST", "/v1/campaigns/spring/approve", {})
    assert status == 200, answer
    one_through_each_worker(proc, "after", CAMPAIGN)
    states = proc.wait_states({"after0@example.org": "sent", "after1@example.org": "sent"})
    assert states["after0@example.org"] == states["after1@example.org"] == "sent"
    # A rejection stops both workers again.
    status, answer = proc.call("POST", "/v1/campaigns/spring/reject", {})
    assert status == 200, answer
    one_through_each_worker(proc, "late", CAMPAIGN)
    states = proc.wait_states({"late0@example.org": "dropped", "late1@example.org": "dropped"})
    assert states["late0@example.org"] == states["late1@example.org"] == "dropped"


def test_with_review_users_the_default_is_still_one_worker_per_cpu(
    sink: Sink, tmp_path: Path
) -> None:
    # Review sign-ins are kept in the store, shared by the workers: review users change
    # neither the default nor need a warning (they used to force one process).
    users = {"ann": {"password_hash": hash_password("ann-password")}}
    config = {**base_config(sink.port), "review": {"users": users}}
    path = tmp_path / "sendguard.yaml"
    path.write_text(yaml.safe_dump(config))
    http = int(config["http"]["listen"].rsplit(":", 1)[1])
    cpus = default_workers()
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [SENDGUARD, "serve", "--config", str(path)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(http) or (cpus > 1 and len(children(server.pid)) < cpus):
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.05)
        assert len(children(server.pid)) == (cpus if cpus > 1 else 0)
    finally:
        server.terminate()
        assert server.wait(30) == 0
    assert "sign-ins" not in (tmp_path / "serve.log").read_text()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
