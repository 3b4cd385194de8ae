"""Simulations over the HTTP API: POST /v1/simulations replays the server's own recorded
traffic through an inline candidate config, off the event loop; GET returns the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess

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
