"""`sendguard review ...` and `sendguard timeline` against a running server."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
    assert lines[0].split() == ["ID", "RECIPIENT", "CAMPAIGN", "HELD", "SINCE", "REASONS"]
    assert len(lines) == 6 and lines[-1] == "3 held: fall 2, winter 1"
    assert first in out.stdout and "campaign fall is not approved yet" in out.stdout

    out = cli(proc, "review", "list", "--campaign", "winter", "--json")
    assert json.loads(out.stdout)["total"] == 1
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
    assert out.stdout.strip() == "campaign winter: approved, 1 delivery"
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


def test_review_list_counts_everything_and_shows_every_reason(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[
            {"plugin": "context", "options": {"max_data_age": "1h", "on_stale": "hold"}},
            {"plugin": "human_hold"},
        ]
    )
    stale = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    people = [f"p{i:03d}@example.org" for i in range(620)]
    for start in range(0, len(people), 100):
        send_json(proc, to=people[start : start + 100], campaign="fall", data_as_of=stale)
    send_json(proc, to=["solo@example.org"], data_as_of=stale)

    out = cli(proc, "review", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 + 50 + 3  # header, the first 50, a blank line, the totals, a hint
    assert lines[-2] == "621 held: (no campaign) 1, fall 620"
    assert lines[-1].startswith("showing 50; --limit 0 shows all, --after ")
    fall = next(line for line in lines[1:51] if " fall " in line)
    assert "context: data as of" in fall
    assert "human_hold: campaign fall is not approved yet" in fall

    rest = cli(proc, "review", "list", "--after", lines[-1].rsplit(" ", 3)[-3], "--limit", "0")
    assert len(rest.stdout.splitlines()) == 1 + 571 + 2
    assert rest.stdout.splitlines()[-1] == "571 held: fall 571"  # newest first: solo was shown

    everything = cli(proc, "review", "list", "--limit", "0")
    assert len(everything.stdout.splitlines()) == 1 + 621 + 2


def test_cli_survives_a_closed_pipe(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    send_json(proc, to=[f"x{i}@example.org" for i in range(300)], campaign="big")
    command = [
        SENDGUARD,
        "review",
        "list",
        "--limit",
        "0",
        "--url",
        f"http://127.0.0.1:{proc.http_port}",
        "--token",
        TOKEN,
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.readline()
        child.stdout.close()  # the reader goes away, as `| head -1` does
        err = child.stderr.read().decode()
        assert child.wait(30) in (0, 1)
    assert "Traceback" not in err and "BrokenPipe" not in err
