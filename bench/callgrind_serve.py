"""User-space instructions per message of `sendguard serve --workers 1`, per thread.

Usage: python bench/callgrind_serve.py OUT [--messages 300] [--warm 50] [--port-base P]
                                          [--bare | --postgres]

`sendguard serve` with `make bench`'s config (SQLite, the six policies as shipped, the SMTP
upstream into Postfix's smtp-sink, the bench's campaign approved) runs under
`valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no`; smtp-source sends
`--warm` messages (20 sessions, one message per connection), then instrumentation is turned on
and the counters zeroed, `--messages` more are sent, and the counters are dumped into OUT
(`callgrind.out.PID-NN` per thread). Prints each thread's instructions per message. The serve
that runs is the `sendguard` package this interpreter imports (PYTHONPATH chooses another
checkout's). The listeners take `--port-base` and the next port when given (else free ports).
With `--bare`, `bench/bare_relay.py` (aiosmtpd in, pooled aiosmtplib out: the issue's
baseline) runs under valgrind the same way instead, with the same traffic, so the two are
compared per message and, with `callgrind_annotate`, per step. With `--postgres`, the serve's
store is a new schema of the PostgreSQL server `BENCH_PG` names (as `make bench`'s PostgreSQL
rows; dropped afterwards): sendguard's own instructions with that store, the server's not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: the sink, the config, smtp-source


def per_thread(out: Path, pid: int) -> dict[str, int]:
    """Instructions of each thread's last dump (`summary:` / `totals:` of its file)."""
    found: dict[str, int] = {}
    for path in sorted(out.glob(f"callgrind.out.{pid}*")):
        text = path.read_text(errors="replace")
        thread = re.search(r"^thread: (\d+)$", text, re.MULTILINE)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if total is None:
            continue
        name = f"thread {thread.group(1) if thread else '?'} ({path.name})"
        found[name] = int(total.group(1))
    return found


def _wait_listening(proc: subprocess.Popen[bytes], work: Path, ports: tuple[int, ...]) -> None:
    """Until every port listens (valgrind starts slowly, and the listeners open seconds
    apart); a serve that exits meanwhile (a port taken) ends the wait."""
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sendguard exited {proc.returncode}: see {work}/sendguard.log")
        try:
            for port in ports:
                run.wait_port(port, timeout=1)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
        else:
            return


def _postgres() -> dict[str, str]:
    """The store config of a new schema on the server `BENCH_PG` names."""
    pg = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    return {"url": pg, "schema": f"bench_callgrind_{int(time.time())}"}


def _drop(store: dict[str, str]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        drop = f"DROP SCHEMA IF EXISTS {store['schema']} CASCADE"
        subprocess.run(
            ["psql", store["url"], "-qc", drop], capture_output=True, check=False, timeout=60
        )


def _measure(pid: int, sink: run.Sink, smtp: int, warm: int, messages: int) -> None:
    """`warm` messages, then `messages` more counted: instrumentation on and zeroed, dumped."""
    warmed = run.throughput(sink, smtp, warm, run.SMALL, reuse=False)
    assert warmed["ok"], warmed
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True)
    measured = run.throughput(sink, smtp, messages, run.SMALL, reuse=False)
    assert measured["ok"], measured
    time.sleep(2)  # the last `sent` commits
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True)
    time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--port-base", type=int, default=0)
    parser.add_argument("--bare", action="store_true", help="the bare relay instead")
    parser.add_argument("--postgres", action="store_true", help="the store on BENCH_PG")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    if args.port_base:  # the sink too, from the ports given: port base + 2 on
        run.free_port = iter(range(args.port_base + 2, args.port_base + 100)).__next__
    sink = run.Sink(work)
    proc = None
    store = _postgres() if args.postgres else None
    try:
        config = run.sendguard_config(work, sink, store)
        if args.port_base:
            config["smtp"]["listen"] = f"127.0.0.1:{args.port_base}"
            config["http"]["listen"] = f"127.0.0.1:{args.port_base + 1}"
            (work / "sendguard.yaml").write_text(yaml.safe_dump(config))
        smtp = int(config["smtp"]["listen"].rsplit(":", 1)[1])
        http = int(config["http"]["listen"].rsplit(":", 1)[1])
        if args.bare:
            served = [str(run.ROOT / "bench" / "bare_relay.py"), str(smtp), str(sink.port), "20"]
        else:
            served = ["-m", "sendguard", "serve", "--config", "sendguard.yaml", "--workers", "1"]
        log = (work / "sendguard.log").open("wb")
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}/callgrind.out.%p",
                str(run.BIN / "python"),
                *served,
            ],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_listening(proc, work, (smtp,) if args.bare else (http, smtp))
        if not args.bare:
            contestant = run.Contestant("sendguard", smtp, pid=proc.pid, http=http)
            run.approve_campaign(contestant, sink)
        _measure(proc.pid, sink, smtp, args.warm, args.messages)
        for name, count in per_thread(out, proc.pid).items():
            print(f"{name}: {count / args.messages:,.0f} instructions per message")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        sink.stop()
        if store is not None:
            _drop(store)


if __name__ == "__main__":
    main()
