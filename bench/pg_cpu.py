"""Whole-machine CPU per message of sendguard on PostgreSQL, two checkouts A/B, alternating.

    .venv/bin/python bench/pg_cpu.py A B [--messages N] [--rounds R] [--instances 1|2]

`A` and `B` are checkouts of sendguard (e.g. `git archive main | tar -x -C /tmp/a`); each runs
its own code (`PYTHONPATH`) with this venv's dependencies. Each
starts `sendguard serve` with `make bench`'s config (bench/run.py: the six policies as shipped,
an SMTP upstream) on a fresh schema of the PostgreSQL server `BENCH_PG` names, approves the
bench's campaign and sends a warm-up. Then rounds of A B B A runs: `N` single-recipient
newsletters over 20 SMTP sessions, one message per connection, each to another person,
into an aiosmtpd sink in this process. CPU is counted as `make bench` counts it
(bench/run.py's `postgres_processes`): user + system time of the sendguard processes and of
the PostgreSQL server's (the backends of their connections and the server's own), over the
time from the first message sent to the last received, per message. With `--instances 2`,
each checkout runs two instances on one schema and the sessions are split between them.

The sender and the sink are Python in this process, slower than `smtp-source`: fewer
messages are in flight than in `make bench`, so fewer share a claim; the A/B ratio is the
measure, not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: the config, starting sendguard, CPU counting

SESSIONS = 20


class CountingSink(run.Sink):
    """An aiosmtpd sink in a thread, counting what it accepts (bench/run.py's Sink counts
    smtp-sink's output; `settle` and `wait` are its own)."""

    def __init__(self) -> None:  # no super().__init__: no smtp-sink process
        self.port = run.free_port()
        self.received = 0
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self._lock:
            self.received += 1
        return "250 2.0.0 Ok"

    def count(self) -> int:
        return self.received

    def stop(self) -> None:
        self._controller.stop()


_RUN = itertools.count(1)


def send(ports: list[int], messages: int) -> None:
    """`messages` single-recipient newsletters over SESSIONS threads, one per connection."""
    body = run.crlf(run.newsletter(run.SMALL))
    run_id = f"{next(_RUN)}-{time.time_ns()}"
    numbers = iter(range(messages))
    lock = threading.Lock()
    errors: list[str] = []

    def session(n: int) -> None:
        port = ports[n % len(ports)]
        while True:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                    client.sendmail("news@example.com", [f"r{run_id}-{i}@example.org"], body)
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=session, args=(n,)) for n in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:  # e.g. a 451 on the loaded machine: the message was not accepted
        print(f"  {len(errors)} sends failed, e.g. {errors[0]}", flush=True)


def _is_backend(pid: int) -> bool:
    """A PostgreSQL backend serving a client (its title names the client's address)."""
    with contextlib.suppress(OSError):
        return b"(" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


class Variant:
    """One checkout's sendguard instances on a schema of their own."""

    def __init__(self, name: str, work: Path, sink: CountingSink, env: dict[str, str], n: int):
        pg = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
        self.name = name
        self.schema = f"bench_pgcpu_{name.lower()}_{int(time.time())}"
        store = {"url": pg, "schema": self.schema}
        self.pg = pg
        self.instances = [
            run.start_sendguard(
                work / f"{name}-{i}", sink, store, name=f"{name}{i}", env=env, approve=i == 0
            )
            for i in range(n)
        ]
        self.sink = sink

    def processes(self) -> list[int]:
        mine = [pid for c in self.instances for pid in c.processes()]
        return mine + run.postgres_processes(mine)

    def measure(self, messages: int) -> dict[str, float]:
        self.sink.settle(quiet=0.5)
        before = self.sink.count()
        mine = [pid for c in self.instances for pid in c.processes()]
        pg_pids = run.postgres_processes(mine)
        cpu_before = run.cpu_snapshot(mine + pg_pids)
        started = time.monotonic()
        send([c.port for c in self.instances], messages)
        got = self.sink.wait(before + messages, timeout=60) - before
        seconds = time.monotonic() - started
        cpu_after = run.cpu_snapshot(mine + run.postgres_processes(mine))
        if got != messages:
            # A policy that timed out on the loaded machine holds its delivery (on_error):
            # counted per message received, and said.
            print(f"  {self.name}: the sink got {got} of {messages}", flush=True)
        messages = max(got, 1)
        own = run.cpu_spent(
            {p: c for p, c in cpu_before.items() if p in mine},
            {p: c for p, c in cpu_after.items() if p in mine},
        )
        # The backends of sendguard's connections alone: the server's own processes (WAL
        # writer, checkpointer, ...) also work for other users of the server.
        backends = {p for p in cpu_after if p not in mine and _is_backend(p)}
        served = run.cpu_spent(
            {p: c for p, c in cpu_before.items() if p in backends},
            {p: c for p, c in cpu_after.items() if p in backends},
        )
        whole = run.cpu_spent(cpu_before, cpu_after)
        return {
            "ms": whole / messages * 1000,
            "sendguard_ms": own / messages * 1000,
            "postgres_ms": (whole - own) / messages * 1000,
            "backends_ms": served / messages * 1000,
            "rate": messages / seconds,
        }

    def stop(self) -> None:
        for contestant in self.instances:
            with contextlib.suppress(Exception):
                contestant.stop()
        import subprocess  # noqa: PLC0415

        subprocess.run(
            ["psql", self.pg, "-qc", f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"],
            capture_output=True,
            check=False,
            timeout=60,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="the checkout run as A")
    parser.add_argument("b", type=Path, help="the checkout run as B")
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="pg-cpu-")))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sink = CountingSink()
    env_a = {**os.environ, "PYTHONPATH": str(args.a.resolve())}
    env_b = {**os.environ, "PYTHONPATH": str(args.b.resolve())}
    variants: list[Variant] = []
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for name, env in (("A", env_a), ("B", env_b)):
            variants.append(Variant(name, args.work, sink, env, args.instances))
        for variant in variants:
            variant.measure(max(100, args.messages // 4))  # warm-up: statement caches, pools
        by_name = {v.name: v for v in variants}
        for _ in range(args.rounds):
            for name in ("A", "B", "B", "A"):
                figures = by_name[name].measure(args.messages)
                results[name].append(figures)
                print(
                    f"{name}: {figures['ms']:.3f} ms CPU per message (sendguard"
                    f" {figures['sendguard_ms']:.3f} + PostgreSQL {figures['postgres_ms']:.3f},"
                    f" of which its backends {figures['backends_ms']:.3f}),"
                    f" {figures['rate']:.0f} msg/s",
                    flush=True,
                )
    finally:
        for variant in variants:
            variant.stop()
        sink.stop()
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        if runs:
            summary[name] = {
                key: round(statistics.mean(r[key] for r in runs), 3) for key in runs[0]
            }
    print(summary)
    if results["A"] and results["B"]:
        print(f"B / A: {summary['B']['ms'] / summary['A']['ms']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
