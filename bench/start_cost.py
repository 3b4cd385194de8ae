"""What a `sendguard serve` start and a `sendguard check-config` cost (session 12).

Usage: python bench/start_cost.py [--runs 10] [--callgrind OUT] [--config tests|shipped]

`serve --workers 1` is spawned, `/healthz` polled every 10 ms until it answers 200 (as
tests/support/process.py does), then it gets SIGTERM and is reaped: the wall time to ready and
the process's user + system CPU time (start, ready, drain, exit) of each run, and their medians.
`check-config` of the same config is timed the same way. The config is the test suite's
`base_config` (`tests`: SQLite, the outbox, schedule only, JSON logs) or the shipped
`config/sendguard.yaml` on free ports (`shipped`: the six policies). Every process keeps its
bytecode in a cache outside the tree (as the suite's do, tests/conftest.py); one run of each
warms it first and is not counted.

With `--callgrind OUT`, one serve and one check-config run under `valgrind --tool=callgrind`
instead, and the instructions of each (its whole life) are printed; the files stay in OUT.
The `sendguard` package is the one this interpreter imports (PYTHONPATH chooses another
checkout's).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.process import base_config, free_port  # the suite's config and ports

ROOT = Path(__file__).resolve().parents[1]


SERVE_ARGS = ("--config", "sendguard.yaml", "--workers", "1")


def config_for(kind: str) -> dict[str, Any]:
    if kind == "tests":
        return base_config(None)
    config: dict[str, Any] = yaml.safe_load((ROOT / "config" / "sendguard.yaml").read_text())
    config["smtp"]["listen"] = f"127.0.0.1:{free_port()}"
    config["http"]["listen"] = f"127.0.0.1:{free_port()}"
    config["http"]["api_tokens"] = ["bench-token-0123456789"]
    return config


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        cache = Path(tempfile.gettempdir()) / f"sendguard-test-pycache-{os.getuid()}"
        env.setdefault("PYTHONPYCACHEPREFIX", str(cache))
    return env


def cpu_of(rusage: Any) -> float:
    return float(rusage.ru_utime + rusage.ru_stime)


def serve_once(work: Path, config: dict[str, Any], prefix: list[str]) -> tuple[float, float]:
    """(seconds until /healthz answered, CPU seconds of the process's whole life)."""
    port = int(config["http"]["listen"].rsplit(":", 1)[1])
    (work / "sendguard.yaml").write_text(yaml.safe_dump(config))
    with (work / "sendguard.log").open("ab") as log:
        began = time.monotonic()
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "sendguard", "serve", *SERVE_ARGS],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment(),
        )
    deadline = began + 600
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: see {work}/sendguard.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.01)
    ready = time.monotonic() - began
    proc.send_signal(signal.SIGTERM)
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ready, cpu_of(rusage)


def check_once(work: Path, prefix: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `check-config` of the config serve_once wrote."""
    began = time.monotonic()
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "sendguard", "check-config", "--config", "sendguard.yaml"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
    )
    _, status, rusage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("check-config failed")
    return time.monotonic() - began, cpu_of(rusage)


def instructions(out: Path, name: str) -> int:
    text = (out / f"callgrind.out.{name}").read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    assert found is not None, name
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--config", choices=("tests", "shipped"), default="tests")
    parser.add_argument("--callgrind", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="start-cost-") as tmp:
        work = Path(tmp)
        config = config_for(args.config)
        serve_once(work, config, [])  # the bytecode cache, the store's schema
        check_once(work, [])
        if args.callgrind is not None:
            out: Path = args.callgrind.resolve()
            out.mkdir(parents=True, exist_ok=True)
            for name in ("serve", "check"):
                (out / f"callgrind.out.{name}").unlink(missing_ok=True)
            valgrind = ["valgrind", "--tool=callgrind", "--quiet"]
            serve_once(work, config, [*valgrind, f"--callgrind-out-file={out}/callgrind.out.serve"])
            check_once(work, [*valgrind, f"--callgrind-out-file={out}/callgrind.out.check"])
            print(f"serve to ready and exit: {instructions(out, 'serve') / 1e9:.3f} x 10^9")
            print(f"check-config: {instructions(out, 'check') / 1e9:.3f} x 10^9")
            return
        serves = [serve_once(work, config, []) for _ in range(args.runs)]
        checks = [check_once(work, []) for _ in range(args.runs)]
        for label, runs in (("serve: ready", serves), ("check-config", checks)):
            walls = [wall for wall, _ in runs]
            cpus = [cpu for _, cpu in runs]
            print(
                f"{label}: wall median {statistics.median(walls) * 1000:.0f} ms"
                f" (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f});"
                f" CPU median {statistics.median(cpus) * 1000:.0f} ms"
                f" (min {min(cpus) * 1000:.0f}, max {max(cpus) * 1000:.0f})"
            )


if __name__ == "__main__":
    main()
