"""A suppression is only recorded unless an enforcing policy drops mail for it: the timeline
(API and `sendguard timeline`), `check-config` and the start log say which, never more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sendguard.ingress.answers import Timeline
from tests.e2e.test_cli_review import cli
from tests.e2e.test_reload import write
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, base_config, run_with_config
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
ADDRESS = "sup@example.org"
NOT_ENFORCED = "recorded, but no policy in enforce mode drops mail to suppressed addresses"


def suppress_then_send(proc: SendguardProcess, *headers: str) -> str:
    """Suppress ADDRESS through the API, send it one message over SMTP; its final state."""
    status, answer = proc.call("POST", "/v1/suppressions", {"address": ADDRESS})
    assert status in (200, 201), answer
    send(proc, [ADDRESS], message(*headers))
    return proc.wait_settled()[ADDRESS]


def timeline(proc: SendguardProcess) -> tuple[dict[str, Any], str]:
    """The timeline answer's `suppression` and the suppression line `sendguard timeline` prints."""
    status, answer = proc.call("GET", f"/v1/recipients/{ADDRESS}/timeline")
    assert status == 200, answer
    Timeline.model_validate(answer)  # the shape the OpenAPI document describes
    out = cli(proc, "timeline", ADDRESS)
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("suppressed:")]
    return answer["suppression"], line


def start_warnings(proc: SendguardProcess) -> list[str]:
    return [
        str(e["detail"])
        for e in proc.log_events()
        if e.get("level") == "warning" and e["event"] == "suppressions are only recorded"
    ]


def test_fatigue_enforcing_drops_marketing_and_says_so(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}, {"plugin": "fatigue"}])
    assert suppress_then_send(proc) == "dropped"
    suppression, line = timeline(proc)
    assert suppression["dropped_classes"] == ["marketing"]
    assert suppression["honoured_by"] == [
        {"policy": "fatigue", "mode": "enforce", "drops": ["marketing"]}
    ]
    assert line.endswith(
        ": marketing mail to this address is dropped (by fatigue); transactional mail is not"
    ), line
    assert start_warnings(proc) == []


def test_without_fatigue_it_is_sent_and_the_timeline_says_nothing_drops_it(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    assert suppress_then_send(proc) == "sent"
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [[ADDRESS]]
    suppression, line = timeline(proc)
    assert suppression["dropped_classes"] == [] and suppression["honoured_by"] == []
    assert "is dropped" not in line
    assert line.endswith(f"{NOT_ENFORCED} (no configured policy honours suppressions)"), line
    (warning,) = start_warnings(proc)
    assert "add fatigue to `policies:` (mode: enforce)" in warning, warning

    # a reload that adds fatigue: the next timeline answer says it drops marketing
    write(proc, {**proc.config, "policies": [{"plugin": "schedule"}, {"plugin": "fatigue"}]})
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    suppression, line = timeline(proc)
    assert suppression["dropped_classes"] == ["marketing"]
    assert "marketing mail to this address is dropped (by fatigue)" in line, line


def test_fatigue_in_shadow_mode_sends_and_says_so(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "fatigue", "mode": "shadow"}])
    assert suppress_then_send(proc) == "sent"
    suppression, line = timeline(proc)
    assert suppression["dropped_classes"] == []
    assert suppression["honoured_by"] == [
        {"policy": "fatigue", "mode": "shadow", "drops": ["marketing"]}
    ]
    assert line.endswith(f"{NOT_ENFORCED} (fatigue is in shadow mode)"), line
    (warning,) = start_warnings(proc)
    assert "set `mode: enforce` on fatigue" in warning, warning


def test_fatigue_exempting_marketing_sends_it_and_says_so(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "fatigue", "options": {"exempt_classes": ["marketing"]}}])
    assert suppress_then_send(proc) == "sent"
    suppression, line = timeline(proc)
    assert suppression["dropped_classes"] == ["transactional"]
    assert line.endswith(
        ": transactional mail to this address is dropped (by fatigue); marketing mail is not"
    ), line
    assert start_warnings(proc) == []  # something is dropped: no warning


def test_fatigue_exempting_every_class_is_only_recording(sendguard: Start, sink: Sink) -> None:
    exempt = {"exempt_classes": ["marketing", "transactional"]}
    proc = sendguard(policies=[{"plugin": "fatigue", "options": exempt}])
    assert suppress_then_send(proc, "X-Sendguard-Class: transactional") == "sent"
    suppression, line = timeline(proc)
    assert suppression["dropped_classes"] == []
    assert line.endswith(f"{NOT_ENFORCED} (fatigue exempts every message class)"), line
    (warning,) = start_warnings(proc)
    assert "narrow `exempt_classes` of fatigue" in warning, warning


@pytest.mark.parametrize(
    ("policies", "warned"),
    [
        ([{"plugin": "schedule"}], "(no configured policy honours suppressions)"),
        ([{"plugin": "fatigue", "mode": "shadow"}], "(fatigue is in shadow mode)"),
        ([{"plugin": "fatigue"}], None),
    ],
)
def test_check_config_warns_when_suppressions_are_only_recorded(
    tmp_path: Path, policies: list[dict[str, Any]], warned: str | None
) -> None:
    config = base_config(None)
    config["policies"] = policies
    code, output = run_with_config("check-config", config, tmp_path)
    assert code == 0, output
    lines = [x for x in output.splitlines() if "suppressions are only recorded" in x]
    if warned is None:
        assert lines == [], output
    else:
        (line,) = lines
        assert line.startswith("sendguard: warning: suppressions are only recorded"), line
        assert warned in line, line
