"""`sendguard review ...` and `sendguard timeline` against a running server."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.test_http_api import REVIEWED, send_json
from tests.support.process import SENDGUARD, TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def cli(
    proc: SendguardProcess, *args: str, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    extra = ["--url", f"http://127.0.0.1:{proc.http_port}"]
    if token is not None:
        extra += ["--token", token]
    env = {k: v for k, v in os.environ.items() if k != "SENDGUARD_API_TOKEN"}
    return subprocess.run(
        [SENDGUARD, *args, *extra],
        capture_output=True,
        text=True,
        cwd=proc.workdir,
        env=env,
        timeout=30,
        check=False,
    )


def test_review_list_show_approve_reject(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    first = send_json(proc, to=["one@example.org"], campaign="fall")["deliveries"][0]["id"]
    second = send_json(proc, to=["two@example.org"], campaign="fall")["deliveries"][0]["id"]
    send_json(proc, to=["three@example.org"], campaign="winter")

    out = cli(proc, "review", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "RECIPIENT", "CAMPAIGN", "HELD", "SINCE", "REASON"]
    assert len(lines) == 4
    assert first in out.stdout and "campaign fall is not approved yet" in out.stdout

    out = cli(proc, "review", "list", "--campaign", "winter", "--json")
    assert [d["recipient"] for d in json.loads(out.stdout)["deliveries"]] == ["three@example.org"]

    out = cli(proc, "review", "show", first)
    assert out.returncode == 0, out.stderr
    assert "recipient  one@example.org" in out.stdout
    assert "human_hold" in out.stdout

    out = cli(proc, "review", "approve", first, "--reviewer", "ana", "--note", "fine")
    assert out.returncode == 0, out.stderr
    assert f"delivery {first} to one@example.org: now delayed" in out.stdout
    out = cli(proc, "review", "reject", second, "--reviewer", "ana")
    assert "now dropped" in out.stdout
    out = cli(proc, "review", "approve", second, "--reviewer", "ana")
    assert out.returncode == 1 and "409" in out.stderr and "not held" in out.stderr

    out = cli(proc, "review", "approve", "--campaign", "winter", "--reviewer", "bob")
    assert out.stdout.strip() == "campaign winter: approved, 1 deliveries"
    sink.wait_for(2)
    assert cli(proc, "review", "list").stdout.strip() == "nothing is held for review"


def test_timeline_table_and_default_token_file(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(http={"api_tokens": []}, policies=REVIEWED)
    token = (proc.workdir / "var" / "api-token").read_text().strip()
    assert oct((proc.workdir / "var" / "api-token").stat().st_mode & 0o777) == "0o600"
    status, _ = proc.call(
        "POST",
        "/v1/messages",
        {"from": "s@example.com", "to": ["tl@example.org"], "subject": "Hi", "campaign": "c1"},
        token=token,
    )
    assert status == 202
    out = cli(proc, "timeline", "tl@example.org", token=None)  # reads var/api-token
    assert out.returncode == 0, out.stderr
    assert "timeline of tl@example.org" in out.stdout
    assert "held" in out.stdout and "c1" in out.stdout

    out = cli(proc, "timeline", "tl@example.org", token="wrong")
    assert out.returncode == 1 and "401" in out.stderr
