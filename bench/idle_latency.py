"""Added latency at idle: `make bench`'s serial prober against sendguard and direct to the sink.

Usage: python -m bench.idle_latency [--probes N] [--rounds R] [--ports FIRST]

Postfix's `smtp-sink`, one `sendguard serve --workers 1` with `make bench`'s config in front of
it (`bench/run.py`'s `start_sendguard`: SQLite, SMTP upstream, the six policies as shipped, the
bench's campaign approved), and the prober of `make bench`'s latency section (`run.probe`: 2 KB
newsletters one after another on one connection, each timed from MAIL to the 250 after DATA).
Each round probes the sink directly, then sendguard; the last lines are p50 / p99 over all
rounds and what sendguard adds (its p50 minus the sink's, as `make bench` reports it).

`--ports FIRST` takes the servers' ports from FIRST upwards (helpers on a shared machine are
given ranges); without it, free ports as `make bench` picks them.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: the sink, the config, the prober


def ports_from(first: int) -> None:
    """Make `run.free_port` hand out free ports from `first` upwards."""
    state = {"next": first}

    def free_port() -> int:
        while True:
            port = state["next"]
            state["next"] += 1
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port

    run.free_port = free_port


def summary(label: str, times: list[float]) -> str:
    return (
        f"{label}: p50 {run.percentile(times, 50):.2f} ms, p90 {run.percentile(times, 90):.2f}"
        f" ms, p99 {run.percentile(times, 99):.2f} ms ({len(times)} probes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--probes", type=int, default=500, help="probes per round and target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ports", type=int, default=None, help="first port to use")
    args = parser.parse_args()
    if args.ports is not None:
        ports_from(args.ports)
    direct: list[float] = []
    relayed: list[float] = []
    print(f"load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sendguard-latency-") as tmp:
        work = Path(tmp)
        sink = run.Sink(work)
        try:
            with run.running(run.start_sendguard(work / "sg", sink)) as sendguard:
                run.probe(sendguard.port, 50)  # warm up: imports, caches, the upstream pool
                for round_ in range(args.rounds):
                    d = run.probe(sink.port, args.probes)
                    s = run.probe(sendguard.port, args.probes)
                    print(f"round {round_ + 1}: " + summary("direct", d), flush=True)
                    print(f"round {round_ + 1}: " + summary("sendguard", s), flush=True)
                    direct += d
                    relayed += s
        finally:
            sink.stop()
    print(f"load average {os.getloadavg()}")
    print(summary("direct", direct))
    print(summary("sendguard", relayed))
    print(
        f"added: p50 {run.percentile(relayed, 50) - run.percentile(direct, 50):.2f} ms,"
        f" p99 {run.percentile(relayed, 99) - run.percentile(direct, 99):.2f} ms"
    )


if __name__ == "__main__":
    main()
