"""The command line finds the API in the server's config (`--config`): the address from
`http.listen`, the token from `http.api_tokens` (env:/file: read) or the server's token file;
`--url`, `--token` and the environment still win. `sendguard healthcheck` (the image's
HEALTHCHECK) asks /healthz at the configured address. Approving a campaign the server has never
seen warns, naming the closest known ones."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_http_api import REVIEWED, send_json
from tests.support.process import SENDGUARD, TOKEN, SendguardProcess, free_port
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def run(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`sendguard ARGS` in `cwd`, with no SENDGUARD_* variable unless `env` sets one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SENDGUARD_")}
    return subprocess.run(
        [SENDGUARD, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=30,
        check=False,
    )


def client_config(tmp_path: Path, proc: SendguardProcess, **http: Any) -> Path:
    """A copy of the server's config where the CLI runs (another directory), `http` changed."""
    config = {**proc.config, "http": {**proc.config["http"], **http}}
    path = tmp_path / "client" / "sendguard.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_api_commands_take_url_and_token_from_the_config(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    proc = sendguard(
        policies=REVIEWED, http={"api_tokens": [{"name": "ops", "token": f"file:{secret}"}]}
    )
    send_json(proc, to=["ann@example.org"], campaign="fall")
    config = proc.config_path
    elsewhere = tmp_path / "client"
    elsewhere.mkdir()

    listed = run(elsewhere, "review", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "ann@example.org" in listed.stdout

    # env:NAME in the config is read from the CLI's environment
    by_env = client_config(tmp_path, proc, api_tokens=["env:OPS_TOKEN"])
    out = run(
        elsewhere, "timeline", "ann@example.org", "--config", str(by_env), env={"OPS_TOKEN": TOKEN}
    )
    assert out.returncode == 0, out.stderr
    assert "timeline of ann@example.org" in out.stdout
    unset = run(elsewhere, "timeline", "ann@example.org", "--config", str(by_env))
    assert unset.returncode == 1
    assert "http.api_tokens[0]" in unset.stderr and "OPS_TOKEN" in unset.stderr

    # --token and $SENDGUARD_API_TOKEN win over the config; so do --url and $SENDGUARD_URL
    wrong = run(elsewhere, "review", "list", "--config", str(config), "--token", "wrong-token-000")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    wrong = run(
        elsewhere, "review", "list", "--config", str(config), env={"SENDGUARD_API_TOKEN": "nope"}
    )
    assert wrong.returncode == 1 and "401" in wrong.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    out = run(elsewhere, "review", "list", "--config", str(config), "--url", nowhere)
    assert out.returncode == 1 and f"cannot reach {nowhere}" in out.stderr
    out = run(elsewhere, "review", "list", "--config", str(config), env={"SENDGUARD_URL": nowhere})
    assert out.returncode == 1 and f"cannot reach {nowhere}" in out.stderr


def test_the_token_file_of_a_config_without_tokens(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    token_file = tmp_path / "generated-token"
    proc = sendguard(http={"api_tokens": [], "token_file": str(token_file)})
    assert token_file.exists()
    listed = run(tmp_path, "review", "list", "--config", str(proc.config_path))
    assert listed.returncode == 0, listed.stderr
    assert "nothing is held for review" in listed.stdout


def test_a_bad_config_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("http:\n  listen: nowhere\n  colour: blue\nstore: {url: env:UNSET_STORE}\n")
    out = run(tmp_path, "review", "list", "--config", str(bad))
    assert out.returncode == 2
    assert "http.listen" in out.stderr and "http.colour" in out.stderr
    # the CLI needs only `http`: the store's secret is not read (nor reported) here
    assert "UNSET_STORE" not in out.stderr
    missing = run(tmp_path, "healthcheck", "--config", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_healthcheck_asks_the_configured_address(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    proc = sendguard()
    ok = run(tmp_path, "healthcheck", "--config", str(proc.config_path))
    assert ok.returncode == 0, ok.stderr
    assert f"http://127.0.0.1:{proc.http_port}/healthz: ok" in ok.stdout
    proc.stop()
    down = run(tmp_path, "healthcheck", "--config", str(proc.config_path), "--timeout", "2")
    assert down.returncode == 1
    assert "unhealthy" in down.stderr and f"127.0.0.1:{proc.http_port}" in down.stderr


def test_approving_an_unseen_campaign_warns_with_the_closest_names(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    proc = sendguard(policies=REVIEWED)
    send_json(proc, to=["ann@example.org"], campaign="spring-sale")
    send_json(proc, to=["bob@example.org"], campaign="Spring-News")
    send_json(proc, to=["cy@example.org"], campaign="winter")
    config = str(proc.config_path)

    typo = run(tmp_path, "review", "approve", "--campaign", "sprng-sale", "--config", config)
    assert typo.returncode == 0, typo.stderr
    assert "no message of campaign 'sprng-sale'" in typo.stderr
    assert "did you mean spring-sale" in typo.stderr
    assert "winter" not in typo.stderr
    assert "campaign sprng-sale: approved" in typo.stdout  # approving ahead stays possible
    _, campaigns = proc.call("GET", "/v1/campaigns")
    assert {c["name"]: c["approval"] for c in campaigns["campaigns"]}["sprng-sale"] == "approved"

    # a case difference is close too; nothing close: the known ones are listed
    case = run(tmp_path, "review", "approve", "--campaign", "spring-news", "--config", config)
    assert "did you mean Spring-News" in case.stderr
    far = run(tmp_path, "review", "approve", "--campaign", "black-friday", "--config", config)
    assert "known campaigns: Spring-News, spring-sale, winter" in far.stderr

    quiet = run(
        tmp_path, "review", "approve", "--campaign", "autumn", "--quiet", "--config", config
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
    known = run(tmp_path, "review", "approve", "--campaign", "spring-sale", "--config", config)
    assert known.returncode == 0 and known.stderr == ""
    assert "campaign spring-sale: approved, 1 delivery" in known.stdout


@pytest.mark.parametrize("word", ["off", "false", "no"])
def test_check_config_says_how_to_turn_the_resend_check_off(tmp_path: Path, word: str) -> None:
    # YAML reads `off`, `no` and `false` as false: the problem named the key but said only
    # "got False", not that 0 turns the check off.
    config = tmp_path / "sendguard.yaml"
    config.write_text(f"smtp:\n  resend_window: {word}\n")
    out = run(tmp_path, "check-config", "--config", str(config))
    assert out.returncode == 2
    (line,) = [line for line in out.stderr.splitlines() if "smtp.resend_window" in line]
    assert "0 to turn the resend check off" in line, out.stderr
