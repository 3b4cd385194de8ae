"""System calls and context switches per message, per thread: sendguard or the bare relay.

Usage: python bench/syscalls.py [--bare] [--idle | --reuse] [--messages N] [--workers N]
                                [--ports FIRST] [--top K]

One contestant (`sendguard serve --workers 1` with `make bench`'s config; with `--workers N`
its supervisor and workers; with `--bare`, `bench/bare_relay.py`) in front of Postfix's
`smtp-sink`, warmed up, then two runs of the same traffic of different length (N / 4 and N
messages), each counted by `perf stat --per-thread` attached to the contestant's processes:
every `syscalls:sys_enter_*` tracepoint, context switches (voluntary and involuntary: the
kernel counts both), page faults and CPU migrations. What the
longer run counted minus what the shorter one did, over the difference of messages, is per
message: the fixed cost of a run (the settling pauses, the timers of an idle server) cancels.
The traffic is `make bench`'s: smtp-source, 20 sessions, one 2 KB newsletter per connection
(with `--reuse`, many per connection: `-d`); with `--idle`, its latency prober instead (one
connection, one message at a time).

Threads are named by their id: the event loop's is the process's own id; the one with the
fsyncs is the SQLite writer's; "all threads" sums them (with --workers N, of every process).
The sink and the clients are other processes, not counted. perf's tracepoints cost a little
per system call, so the counts are exact but the timing under them is not the same as without:
batch sizes (commits per message under load) and thread hand-offs follow timing.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: the sink, the config, smtp-source, the prober
from bench.idle_latency import ports_from

EVENTS = "context-switches,cpu-migrations,page-faults,syscalls:sys_enter_*"
NOT_CALLS = frozenset({"context-switches", "cpu-migrations", "page-faults"})
Counts = dict[tuple[str, str], int]
"""(thread, event) -> count."""


def counted(pids: list[int], out: Path, traffic: collections.abc.Callable[[], None]) -> Counts:
    """What `perf stat` counts for each thread of `pids` while `traffic` runs."""
    attach = ",".join(map(str, pids))
    perf = subprocess.Popen(
        ["perf", "stat", "--per-thread", "-x", ",", "-e", EVENTS, "-p", attach, "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached (every tracepoint of every thread is opened first)
    traffic()
    perf.send_signal(signal.SIGINT)
    perf.wait(60)
    counts: Counts = collections.defaultdict(int)
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 4 or not fields[1].strip().isdigit():
            continue
        thread, value, event = fields[0], int(fields[1]), fields[3]
        counts[(thread, event.removeprefix("syscalls:sys_enter_"))] += value
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bare", action="store_true", help="the bare relay instead")
    parser.add_argument("--idle", action="store_true", help="the serial prober's traffic")
    parser.add_argument("--reuse", action="store_true", help="smtp-source -d: connection reuse")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--ports", type=int, default=None, help="first port to use")
    parser.add_argument("--top", type=int, default=14, help="events shown per thread")
    parser.add_argument("--workers", type=int, default=1, help="sendguard's --workers")
    args = parser.parse_args()
    if args.ports is not None:
        ports_from(args.ports)
    short, long = args.messages // 4, args.messages
    print(f"load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sendguard-syscalls-") as tmp:
        work = Path(tmp)
        sink = run.Sink(work)
        try:
            contestant = (
                run.start_bare(sink)
                if args.bare
                else run.start_sendguard(work / "sg", sink, workers=args.workers)
            )
            with run.running(contestant):
                assert contestant.pid is not None

                def traffic(messages: int) -> collections.abc.Callable[[], None]:
                    def send() -> None:
                        if args.idle:
                            run.probe(contestant.port, messages)
                            sink.settle()
                        else:
                            done = run.throughput(
                                sink, contestant.port, messages, run.SMALL, reuse=args.reuse
                            )
                            assert done["ok"], done

                    return send

                traffic(200)()  # warm up: imports, caches, the upstream pool, the threads
                # With --workers N: the supervisor and its workers.
                pids = contestant.processes()
                few = counted(pids, work / "few.csv", traffic(short))
                many = counted(pids, work / "many.csv", traffic(long))
        finally:
            sink.stop()
    print(f"load average {os.getloadavg()}")
    per: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for (thread, event), count in many.items():
        per[thread][event] = (count - few.get((thread, event), 0)) / (long - short)
    total: dict[str, float] = collections.defaultdict(float)
    for events in per.values():
        for event, value in events.items():
            total[event] += value
    per["all threads"] = dict(total)
    for thread, events in sorted(per.items(), key=lambda kv: -sum(kv[1].values())):
        calls = sum(v for e, v in events.items() if e not in NOT_CALLS)
        if abs(calls) < 0.05 and abs(events.get("context-switches", 0.0)) < 0.05:
            continue
        switches = events.get("context-switches", 0.0)
        faults = events.get("page-faults", 0.0)
        print(
            f"{thread}: {calls:.2f} system calls, {switches:.2f} context switches,"
            f" {faults:.2f} page faults per message"
        )
        shown = sorted(
            ((e, v) for e, v in events.items() if e not in NOT_CALLS and abs(v) >= 0.01),
            key=lambda ev: -abs(ev[1]),
        )[: args.top]
        print("   " + ", ".join(f"{e} {v:.2f}" for e, v in shown))


if __name__ == "__main__":
    main()
