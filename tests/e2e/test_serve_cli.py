"""`sendguard serve` with the embedded default, `check-config`, health and readiness (metrics:
test_metrics.py)."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sendguard.config import default_config_text
from tests.e2e.test_send_path import message
from tests.support.process import SENDGUARD, SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
ROOT = Path(__file__).resolve().parents[2]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_embedded_default_is_identical_to_config_file() -> None:
    assert default_config_text() == (ROOT / "config" / "sendguard.yaml").read_text()


def test_serve_without_arguments_runs_the_embedded_default(tmp_path: Path) -> None:
    if not (port_free(2525) and port_free(8025)):
        pytest.fail("ports 2525/8025 are taken: is a `make run` still running?")
    proc = subprocess.Popen(
        [SENDGUARD, "serve"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while port_free(2525) and time.monotonic() < deadline:
            time.sleep(0.05)
        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as smtp:
            smtp.sendmail(
                "shop@example.com",
                ["embedded@example.org"],
                message(),  # no campaign: the default human_hold holds unapproved ones,
            )
        deadline = time.monotonic() + 10
        outbox = tmp_path / "var" / "outbox"
        while not list(outbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = list(outbox.glob("*.eml"))
        assert len(files) == 1
        content = files[0].read_bytes()
        assert b"Delivered-To: embedded@example.org" in content
        assert b"X-Sendguard" not in content
        assert (tmp_path / "var" / "sendguard.db").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()


def test_healthz_and_readyz(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    assert proc.http_get("/healthz")[0] == 200
    assert proc.http_get("/readyz")[0] == 200
    sink.stop()
    # A recent answer counts for a few seconds (probes stay cheap); then the upstream is asked.
    deadline = time.monotonic() + 15
    status, body = proc.http_get("/readyz")
    while status != 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = proc.http_get("/readyz")
    assert status == 503
    assert b"upstream" in body
    sink.start()


def test_check_config_names_every_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "smtp:\n  listen: nowhere\n  colour: blue\n"
        "delivery:\n  min_backoff: soon\n"
        "upstream:\n  kind: smtp\n"
        "policies:\n  - plugin: schedule\n    options: {speed: 3}\n"
        "  - plugin: block_domain\n    options: {domains: oops}\n"
        "  - plugin: nonexistent\n"
    )
    out = subprocess.run(
        [SENDGUARD, "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    err = out.stderr
    assert "smtp.listen: 'nowhere' is not 'host:port'" in err
    assert "smtp.colour: unknown key; allowed:" in err
    assert "delivery.min_backoff: 'soon' is not a duration" in err
    assert "upstream.host: required key is missing" in err
    assert "policies[0].options.speed: unknown key for policy 'schedule'" in err
    assert "policies[1].options.domains: policy 'block_domain'" in err
    assert "policies[2].plugin: no policy named 'nonexistent' is installed" in err

    serve = subprocess.run(
        [SENDGUARD, "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert serve.returncode == 2
    assert "smtp.listen" in serve.stderr


def test_check_config_accepts_the_shipped_configs() -> None:
    for path in [
        None,
        ROOT / "config" / "sendguard.yaml",
        *sorted((ROOT / "config").glob("examples/*.yaml")),
    ]:
        args = [SENDGUARD, "check-config"] + (["--config", str(path)] if path else [])
        out = subprocess.run(args, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert "ok" in out.stdout


def test_second_instance_on_the_same_sqlite_file_refuses_to_start(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    proc = sendguard()
    other = proc.config_path.with_name("other.yaml")
    text = proc.config_path.read_text()
    text = text.replace(str(proc.smtp_port), "0").replace(str(proc.http_port), "0")
    other.write_text(text)
    out = subprocess.run(
        [SENDGUARD, "serve", "--config", str(other)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 1
    assert "in use by another sendguard process" in out.stderr
