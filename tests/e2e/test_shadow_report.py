"""The shadow report end to end: what a shadow policy would have done equals its counters."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SENDGUARD, TOKEN, SendguardProcess

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

SHADOW_CAP = {
    "plugin": "frequency",
    "mode": "shadow",
    "options": {"caps": [{"scope": "recipient", "limit": 1, "window": "1d"}]},
}


def shadow_counters(proc: SendguardProcess) -> dict[tuple[str, str], float]:
    status, body = proc.http_get("/metrics")
    assert status == 200
    found = {}
    pattern = re.compile(r"^sendguard_decisions_total\{(.*)\} (\S+)$")
    for line in body.decode().splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels["mode"] == "shadow":
                found[labels["policy"], labels["verdict"]] = float(match.group(2))
    return found


def test_shadow_report_numbers_equal_the_shadow_counters(sendguard: Start) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}, SHADOW_CAP])
    for n in range(3):
        send(proc, ["ann@example.org"], message("X-Sendguard-Campaign: spring", subject=f"s{n}"))
    send(proc, ["bob@example.org", "ann@example.org"], message(subject="both"))
    states = proc.wait_settled()
    assert set(states.values()) == {"sent"}  # shadow: never acted on

    status, report = proc.call("GET", "/v1/policies/shadow?since=1d")
    assert status == 200, report
    (frequency,) = report["policies"]
    assert frequency["policy"] == "frequency" and frequency["configured_as_shadow"]
    counters = shadow_counters(proc)
    assert {v: n for v, n in frequency["counts"].items() if n} == {
        verdict: int(n) for (policy, verdict), n in counters.items() if policy == "frequency" and n
    }
    assert frequency["counts"] == {"forward": 2, "delay": 3, "hold": 0, "drop": 0}
    assert frequency["total"] == 5
    assert {e["recipient"] for e in frequency["examples"]} == {"ann@example.org"}
    assert all("cap" in e["reason"] for e in frequency["examples"])
    assert frequency["recipients"] == [{"recipient": "ann@example.org", "count": 3}]

    shown = subprocess.run(
        [
            SENDGUARD,
            "shadow-report",
            "--since",
            "1d",
            "--url",
            f"http://127.0.0.1:{proc.http_port}",
            "--token",
            TOKEN,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "frequency: 5 verdicts (forward 2, delay 3, hold 0, drop 0)" in shown
    assert "most affected: ann@example.org (3)" in shown


def test_shadow_report_refuses_a_bad_window(sendguard: Start) -> None:
    proc = sendguard()
    status, answer = proc.call("GET", "/v1/policies/shadow?since=lately")
    assert status == 400
    assert answer["error"]["field"] == "since"
