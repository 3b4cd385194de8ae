"""Simulations over the HTTP API: POST /v1/simulations replays the server's own recorded
traffic through an inline candidate config, off the event loop; GET returns the report.
Simulations are kept in the store: with SENDGUARD_TEST_WORKERS=2 a GET often reaches the
worker that did not start it, and one at a time holds across the workers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, children, wait_gone

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

CAP_2_PER_7D = {
    "policies": [
        {
            "plugin": "frequency",
            "options": {"caps": [{"scope": "recipient", "limit": 2, "window": "7d"}]},
        }
    ]
}


def wait_finished(proc: SendguardProcess, simulation_id: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, answer = proc.call("GET", f"/v1/simulations/{simulation_id}")
        assert status == 200, answer
        if answer["status"] != "running":
            return answer
        assert time.monotonic() < deadline, f"simulation still running after {timeout}s"
        time.sleep(0.2)


@pytest.mark.both_backends
def test_a_simulation_reports_what_a_cap_would_have_delayed(sendguard: Start) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    for n in range(3):
        send(proc, ["Ann@Example.org"], message("X-Sendguard-Campaign: spring", subject=f"s{n}"))
    send(proc, ["bob@example.org"], message(subject="once"))
    assert set(proc.wait_settled().values()) == {"sent"}

    status, started = proc.call("POST", "/v1/simulations", {"config": CAP_2_PER_7D, "since": "1d"})
    assert status == 202, started
    assert started["status"] == "running"
    simulation_id = started["id"]

    # One at a time: the second is refused with the running one's id.
    status, refused = proc.call("POST", "/v1/simulations", {"config": CAP_2_PER_7D})
    assert status == 409, refused
    assert refused["error"]["id"] == simulation_id
    # The replay runs in a process of its own: SMTP is answered meanwhile.
    send(proc, ["carl@example.org"], message(subject="during"))

    done = wait_finished(proc, simulation_id)
    assert done["status"] == "done", done
    report = done["report"]
    assert report["deliveries"] == 4  # the message sent during the simulation is after its window
    assert report["changed"] == 1
    (change,) = report["changes"]
    assert change["recipient"] == "Ann@Example.org"
    assert change["subject"] == "s2"
    assert (change["then"], change["would"], change["policy"]) == ("forward", "delay", "frequency")

    status, page = proc.call("GET", f"/v1/simulations/{simulation_id}?format=html")
    assert status == 200
    assert isinstance(page, str) and page.lstrip().lower().startswith("<!doctype html")
    assert "Ann@Example.org" in page

    status, audit = proc.call("GET", "/v1/audit")
    assert status == 200
    (entry,) = [e for e in audit["entries"] if e["action"] == "simulate"]
    assert entry["target"] == f"simulation:{simulation_id}"
    assert entry["actor"]

    # Finished: another may start.
    status, again = proc.call("POST", "/v1/simulations", {"config": "policies: []\n"})
    assert status == 202, again
    assert wait_finished(proc, again["id"])["report"]["changed"] == 0


@pytest.mark.both_backends
def test_a_retransmission_dropped_then_is_dropped_in_the_replay(sendguard: Start) -> None:
    """An SMTP client's second copy was dropped (sendguard/resend.py): replayed through the
    same policies, nothing differs. Before, the replay accepted the copy as a new message and
    reported "then drop, would forward" for a change no config made."""
    proc = sendguard(policies=[])
    copy = message(subject="receipt")
    first = send(proc, ["ann@example.org"], copy)
    again = send(proc, ["ann@example.org"], copy)
    proc.wait_states({"ann@example.org": "sent"}, first)
    proc.wait_states({"ann@example.org": "dropped"}, again)

    status, started = proc.call("POST", "/v1/simulations", {"config": "policies: []\n"})
    assert status == 202, started
    done = wait_finished(proc, started["id"])
    assert done["status"] == "done", done
    assert done["report"]["deliveries"] == 2
    assert done["report"]["changed"] == 0, done["report"]["changes"]


@pytest.mark.both_backends
def test_an_invalid_candidate_is_refused_with_field_paths(sendguard: Start) -> None:
    proc = sendguard()
    bad = {"policies": [{"plugin": "frequency", "options": {"caps": [{"limit": 0}]}}]}
    status, answer = proc.call("POST", "/v1/simulations", {"config": bad})
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == "invalid_config"
    fields = {p["field"] for p in error["problems"]}
    assert "config.policies[0].options.caps[0].limit" in fields
    assert "config.policies[0].options.caps[0].window" in fields

    status, answer = proc.call("POST", "/v1/simulations", {"config": "policies: [oops\n"})
    assert status == 400 and answer["error"]["field"] == "config", answer

    # Secrets are never read for a request (an error could reveal them).
    leaky = {"store": {"url": "file:/etc/passwd"}}
    status, answer = proc.call("POST", "/v1/simulations", {"config": leaky})
    assert status == 400, answer
    assert answer["error"]["field"] == "config.store.url"
    assert "root:" not in str(answer)

    status, answer = proc.call("POST", "/v1/simulations", {"config": {}, "since": "soon"})
    assert status == 400 and answer["error"]["field"] == "since", answer
    status, answer = proc.call(
        "POST",
        "/v1/simulations",
        {"config": {}, "from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
    )
    assert status == 400 and answer["error"]["field"] == "to", answer
    status, answer = proc.call("POST", "/v1/simulations", {"since": "1d"})
    assert status == 400 and answer["error"]["field"] == "config", answer

    status, _ = proc.call("POST", "/v1/simulations", {"config": {}}, token=None)
    assert status == 401
    status, _ = proc.call("GET", "/v1/simulations/nope", token=None)
    assert status == 401
    status, answer = proc.call("GET", "/v1/simulations/nope")
    assert status == 404, answer
    status, answer = proc.call("GET", "/v1/simulations/nope?format=pdf")
    assert status == 400 and answer["error"]["field"] == "format", answer


@pytest.mark.both_backends
def test_a_window_over_max_messages_fails_with_the_bound_named(sendguard: Start) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}], simulate={"max_messages": 1})
    send(proc, ["ann@example.org"], message(subject="one"))
    send(proc, ["ann@example.org"], message(subject="two"))
    proc.wait_settled()
    status, started = proc.call("POST", "/v1/simulations", {"config": CAP_2_PER_7D})
    assert status == 202, started
    failed = wait_finished(proc, started["id"])
    assert failed["status"] == "failed"
    assert "simulate.max_messages (1)" in failed["error"]
    assert "report" not in failed
    status, answer = proc.call("GET", f"/v1/simulations/{started['id']}?format=html")
    assert status == 409, answer


def simulation_worker(proc: SendguardProcess, timeout: float = 30.0) -> int:
    """The pid of the `sendguard.simulate.worker` process the server (or one of its workers)
    started."""
    assert proc.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        servers = [proc.proc.pid, *proc.worker_pids()]
        for pid in (c for server in servers for c in children(server)):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sendguard.simulate.worker" in cmdline:
                return pid
        time.sleep(0.02)
    raise AssertionError("no simulation worker process started")


@pytest.mark.both_backends
def test_a_simulation_whose_server_was_killed_blocks_the_next_only_until_its_lease_ends(
    sendguard: Start,
) -> None:
    lease = 5.0
    proc = sendguard(policies=[{"plugin": "schedule"}], simulate={"lease": f"{lease:.0f}s"})
    send(proc, ["ann@example.org"], message(subject="one"))
    proc.wait_settled()
    status, started = proc.call("POST", "/v1/simulations", {"config": CAP_2_PER_7D})
    assert status == 202, started
    # The replay is held still, so the server that started it is the one keeping it alive.
    worker = simulation_worker(proc)
    os.kill(worker, signal.SIGSTOP)
    try:
        # Well past its first lease, its server renews it: still running, still blocking.
        time.sleep(lease * 1.5)
        status, running = proc.call("GET", f"/v1/simulations/{started['id']}")
        assert (status, running["status"]) == (200, "running"), running
        status, refused = proc.call("POST", "/v1/simulations", {"config": "policies: []\n"})
        assert status == 409 and refused["error"]["id"] == started["id"], refused

        # kill -9 the server (its workers die with it), then the held replay, which would
        # otherwise report to nobody.
        assert proc.proc is not None
        servers = [pid for pid in proc.worker_pids() if pid != worker]
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(10)
        killed = time.monotonic()
    finally:
        os.kill(worker, signal.SIGKILL)
    wait_gone([*servers, worker])

    proc.start()
    # Until its lease ends (at most `lease` after the kill) it blocks, on the restarted
    # server too; then the next one starts, and the killed one reads as failed.
    while True:
        status, answer = proc.call("POST", "/v1/simulations", {"config": "policies: []\n"})
        if status == 202:
            break
        assert status == 409 and answer["error"]["id"] == started["id"], answer
        assert time.monotonic() - killed < lease + 30, "the dead simulation still blocks"
        time.sleep(0.2)
    # Renewed every lease/3 until the kill, it was not freed before most of a lease passed.
    assert time.monotonic() - killed >= lease * 0.6
    status, dead = proc.call("GET", f"/v1/simulations/{started['id']}")
    assert status == 200, dead
    assert dead["status"] == "failed", dead
    assert "lease" in dead["error"], dead
    assert "report" not in dead
    assert wait_finished(proc, answer["id"])["status"] == "done"


def test_a_simulation_running_when_its_server_stops_reads_failed_after_the_restart(
    sendguard: Start,
) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    status, started = proc.call("POST", "/v1/simulations", {"config": CAP_2_PER_7D})
    assert status == 202, started
    worker = simulation_worker(proc)
    os.kill(worker, signal.SIGSTOP)  # still running when the server is asked to stop
    try:
        assert proc.terminate() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server killed it on the way out
            os.kill(worker, signal.SIGKILL)
    proc.start()
    status, stopped = proc.call("GET", f"/v1/simulations/{started['id']}")
    assert status == 200, stopped
    assert (stopped["status"], stopped["error"]) == ("failed", "the server stopped"), stopped
    # Recorded as finished, not left to its lease: the next starts at once.
    status, again = proc.call("POST", "/v1/simulations", {"config": "policies: []\n"})
    assert status == 202, again
    assert wait_finished(proc, again["id"])["status"] == "done"


def counted(proc: SendguardProcess) -> dict[str, float]:
    """Every sample of sendguard's counters and histograms in one scrape, by name and labels."""
    status, body = proc.http_get("/metrics")
    assert status == 200, body
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name.startswith("sendguard_") and family.type in ("counter", "histogram")
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_a_simulation_under_workers_counts_nothing_in_the_servers_metrics(
    sendguard: Start,
) -> None:
    # Under --workers N, a scrape sums the counters every process of the service wrote to the
    # supervisor's multiprocess directory. The replay's process is none of them: the messages
    # it replays through a candidate config were not received, decided or sent again.
    proc = sendguard(policies=[{"plugin": "schedule"}], serve_args=["--workers", "2"])
    for n in range(3):
        send(proc, [f"p{n}@example.org"], message("X-Sendguard-Campaign: spring", subject=f"s{n}"))
    assert set(proc.wait_settled().values()) == {"sent"}
    before = counted(proc)
    assert before, "no counter scraped"
    status, started = proc.call("POST", "/v1/simulations", {"config": CAP_2_PER_7D, "since": "1d"})
    assert status == 202, started
    assert wait_finished(proc, started["id"])["status"] == "done"
    after = counted(proc)
    moved = {
        name: (before.get(name), value)
        for name, value in after.items()
        if value != before.get(name) and "http" not in name  # the scrapes and polls themselves
    }
    assert moved == {}
