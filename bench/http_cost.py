"""What one `POST /v1/messages` costs sendguard: CPU time A/B, and instructions under callgrind.

    .venv/bin/python bench/http_cost.py cpu A B [--rounds R] [--ports FIRST]
    .venv/bin/python bench/http_cost.py callgrind A [B ...] [--requests N] [--path] [--ports FIRST]

`A` and `B` are checkouts of sendguard (e.g. `git archive main | tar -x -C /tmp/a`); each runs
its own code (`PYTHONPATH`) with this venv's dependencies, as `make bench` starts it
(bench/run.py's `start_sendguard`: `serve --workers 1`, the six policies as shipped, SQLite, an
SMTP upstream into Postfix's `smtp-sink`, the bench's campaign approved).

`cpu`: rounds of A B B A, each a fresh server loaded by wrk as `make bench` loads it
(`http_load`: 2 threads, 50 connections); user + system CPU of the server over the run, per
request, with req/s and p99. On a shared machine wall figures move with the load; CPU per
request moves less.

`callgrind`: the server under `valgrind --tool=callgrind`. After a warm-up of `--requests`
sends, the counts are zeroed, `--requests` more are sent (20 at a time,
each to another person, the body wrk sends) and the sink waits for their deliveries, then
the counts are dumped. Instructions per request are the total
over those requests (the dispatcher's sends included) divided by their number: no other load
on the machine changes them. callgrind_control acts when the server next runs code, so each
command is followed by a `GET /healthz` that makes it run some (a few requests' worth of error
at most, against hundreds measured). With `--path`, the server's intake is stubbed
(bench/stubbed_intake.py): the instructions of the HTTP path alone (aiohttp, the middleware,
reading, validating and building the message, the answer), nothing decided or committed.

`--ports FIRST` takes the servers' and the sink's ports from FIRST upwards (helpers sharing a
machine are each given a range); without it, any free ports.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: config, starting sendguard, CPU counting
from bench.idle_latency import ports_from

CONCURRENCY = 20
_wait_port = run.wait_port


def _patient_wait_port(port: int, timeout: float = 180.0) -> None:
    _wait_port(port, timeout)


run.wait_port = _patient_wait_port  # a loaded machine starts a server in more than 20 s


def env_for(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout.resolve())}


@contextlib.contextmanager
def server(checkout: Path, sink: run.Sink, work: Path) -> Iterator[run.Contestant]:
    contestant = run.start_sendguard(work, sink, env=env_for(checkout))
    try:
        yield contestant
    finally:
        contestant.stop()


def cpu(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sendguard-http-cost-"))
    sink = run.Sink(work)
    results: dict[str, list[dict[str, Any]]] = {str(c): [] for c in args.checkouts}
    order = [c for _ in range(args.rounds) for c in (*args.checkouts, *reversed(args.checkouts))]
    try:
        for n, checkout in enumerate(order):
            with server(checkout, sink, work / f"run-{n}") as c:
                assert c.http is not None
                got = run.http_load(c.http, work, c.processes)
                results[str(checkout)].append(got)
                print(
                    f"{checkout}: {got['rps']:.0f} req/s, p99 {got['p99_ms']} ms,"
                    f" {got['cpu_ms']} ms CPU per request, non-2xx {got['non_2xx']}"
                    f" (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        sink.stop()
    for checkout, runs in results.items():
        ms = [r["cpu_ms"] for r in runs if r["cpu_ms"] is not None]
        print(f"{checkout}: CPU per request {ms}, mean {sum(ms) / len(ms):.3f} ms")


def post(connection: http.client.HTTPConnection, recipient: str) -> None:
    body = json.dumps(
        {
            "from": "news@example.com",
            "to": [recipient],
            "subject": run.HTTP_SUBJECT,
            "text": run.HTTP_TEXT,
            "campaign": run.CAMPAIGN,
        }
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {run.TOKEN}"}
    connection.request("POST", "/v1/messages", body, headers)
    answer = connection.getresponse()
    answer.read()
    if answer.status != 202:
        raise RuntimeError(f"POST /v1/messages answered {answer.status}")


_BATCH = itertools.count()


def send(port: int, count: int) -> None:
    """`count` sends over CONCURRENCY keep-alive connections, each to another person."""
    batch = f"{next(_BATCH)}-{time.time_ns() % 10**9}"  # no 19-digit run: parse_json's slow path
    numbers = iter(range(count))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                post(connection, f"c{batch}-{n}@example.org")
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def poke(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("GET", "/healthz")
    connection.getresponse().read()
    connection.close()


def control(pid: int, *flags: str) -> None:
    """A callgrind_control command, made to take effect: it waits until the server runs code."""
    proc = subprocess.Popen(["callgrind_control", *flags, str(pid)], stdout=subprocess.DEVNULL)
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            poke(PORTS[pid])
        time.sleep(0.5)


PORTS: dict[int, int] = {}


def callgrind_one(
    checkout: Path, sink: run.Sink, work: Path, requests: int, stub: bool = False
) -> float:
    """Instructions per request of `checkout`'s server; with `stub`, of the HTTP path alone
    (bench/stubbed_intake.py: nothing decided, committed or sent)."""
    work.mkdir(parents=True)
    config = run.sendguard_config(work, sink)
    out = work / "callgrind.out"
    log = (work / "sendguard.log").open("wb")
    serve = [str(Path(__file__).with_name("stubbed_intake.py"))] if stub else ["-m", "sendguard"]
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            str(run.BIN / "python"),
            *serve,
            "serve",
            "--config",
            "sendguard.yaml",
            "--workers",
            "1",
        ],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env_for(checkout),
    )
    try:
        http_port = int(config["http"]["listen"].rsplit(":", 1)[1])
        run.wait_port(http_port, timeout=1800)
        PORTS[proc.pid] = http_port
        contestant = run.Contestant("sendguard", 0, pid=proc.pid, http=http_port)
        contestant.port = int(config["smtp"]["listen"].rsplit(":", 1)[1])
        run.approve_campaign(contestant, sink)
        send(http_port, requests)  # warm-up: caches, the upstream pool, the first batches
        sink.settle(quiet=2.0, timeout=600)
        before = sink.count()
        control(proc.pid, "--zero")
        send(http_port, requests)
        if not stub:
            got = sink.wait(before + requests, timeout=600) - before
            if got < requests:  # more: a warm-up message released late, counted as well
                raise RuntimeError(f"the sink received {got} of {requests}")
        control(proc.pid, "--dump")
    finally:
        proc.terminate()
        proc.wait(600)
        log.close()
    dumps = sorted(work.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
    total = 0
    for dump in dumps:
        found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
        if found and int(found.group(1)) > total:
            total = int(found.group(1))
    return total / requests


def callgrind(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sendguard-http-callgrind-"))
    sink = run.Sink(work)
    try:
        for n, checkout in enumerate(args.checkouts):
            per = callgrind_one(checkout, sink, work / f"run-{n}", args.requests, args.path)
            print(f"{checkout}: {per:,.0f} instructions per request", flush=True)
    finally:
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("cpu")
    a.add_argument("checkouts", nargs="+", type=Path)
    a.add_argument("--rounds", type=int, default=2)
    b = sub.add_parser("callgrind")
    b.add_argument("checkouts", nargs="+", type=Path)
    b.add_argument("--requests", type=int, default=300)
    b.add_argument("--path", action="store_true", help="the HTTP path alone (stubbed intake)")
    for p in (a, b):
        p.add_argument("--ports", type=int, default=None, help="first port to use")
    args = parser.parse_args()
    if args.ports is not None:
        ports_from(args.ports)
    (cpu if args.mode == "cpu" else callgrind)(args)


if __name__ == "__main__":
    main()
