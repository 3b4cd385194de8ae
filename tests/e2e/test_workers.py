"""`sendguard serve --workers N`: several processes, one listener pair, one store, one answer."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sendguard.password import hash_password
from tests.e2e.test_send_path import message, send
from tests.support.process import (
    SENDGUARD,
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
    status, body = proc.http_get("/metrics")
    assert status == 200
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
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
    # Everything answered 250 arrives, whoever had taken it.
    sink.wait_for(len(accepted), timeout=60)
    proc.wait_settled(timeout=60)
    arrived = [r.message["Subject"] for r in sink.received]
    assert set(accepted) <= set(arrived)
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


def test_sighup_and_an_api_reload_reach_every_worker(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(serve_args=TWO)
    wait_workers(proc, 2)
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reloads = [e for e in proc.log_events() if e.get("event") == "config reloaded"]
        if len(reloads) == 2:
            break
        time.sleep(0.05)
    assert len(reloads) == 2
    status, answer = proc.call("POST", "/v1/admin/reload")
    assert status == 200, answer
    while time.monotonic() < deadline + 20:
        reloads = [e for e in proc.log_events() if e.get("event") == "config reloaded"]
        if len(reloads) == 4:
            break
        time.sleep(0.05)
    actors = sorted(e["actor"] for e in reloads)
    assert len(reloads) == 4, actors
    assert actors.count("signal:SIGHUP") == 3  # two from the signal, one forwarded


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
    for n, client in enumerate(proc.smtp_clients(2)):
        with client:
            client.sendmail("shop@example.com", [f"before{n}@example.org"], message())
    sink.wait_for(2, timeout=20)
    status, answer = proc.call("POST", "/v1/pause", {"note": "incident"})
    assert status == 200 and answer["paused"] is True
    for n, client in enumerate(proc.smtp_clients(2)):  # one connection to each worker
        with client:
            client.sendmail("shop@example.com", [f"after{n}@example.org"], message())
    states = proc.wait_states({"after0@example.org": "held", "after1@example.org": "held"})
    assert states["before0@example.org"] == states["before1@example.org"] == "sent"
    assert len(sink.received) == 2


def test_with_review_users_the_default_is_one_process(sink: Sink, tmp_path: Path) -> None:
    # Review sign-ins live in one process: without --workers, no supervisor and no workers.
    users = {"ann": {"password_hash": hash_password("ann-password")}}
    config = {**base_config(sink.port), "review": {"users": users}}
    path = tmp_path / "sendguard.yaml"
    path.write_text(yaml.safe_dump(config))
    http = int(config["http"]["listen"].rsplit(":", 1)[1])
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [SENDGUARD, "serve", "--config", str(path)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while not _healthy(http):
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.05)
        assert children(server.pid) == []
    finally:
        server.terminate()
        assert server.wait(30) == 0


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
