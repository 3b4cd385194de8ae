"""A 20 MB message through sendguard, in and out, while 2 KB messages keep coming.

    .venv/bin/python -m bench.big_message [--runs N]

Starts Postfix's smtp-sink and one sendguard (SMTP upstream: the sink), sends a 20 MB message
while a prober sends 2 KB messages one after another on another connection, and prints p50,
p99 and max of the prober's latencies while the big message is received and while it is
forwarded; then the same while a JSON message with 5 MB of text is posted over HTTP. A second
sendguard runs with PYTHONASYNCIODEBUG=1 (asyncio's debug mode, which slows everything, so its
latencies are not the figures) and the script prints the callbacks its event loop reported as
slow (over 100 ms): what still runs in one piece on the loop.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bench.run import (
    Sink,
    percentile,
    running,
    small_during_big,
    small_during_big_post,
    start_sendguard,
)

SLOW = re.compile(r"Executing (.*?) took ([\d.]+) seconds")


def summary(times: list[float]) -> str:
    if not times:
        return "no probe finished"
    return (
        f"{len(times)} probes, p50 {percentile(times, 50):.1f} ms,"
        f" p99 {percentile(times, 99):.1f} ms, max {max(times):.1f} ms"
    )


def slow_callbacks(log: Path) -> list[tuple[float, str]]:
    """What asyncio's debug mode reported as slow in a serve log, slowest first."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = SLOW.search(line)
        if match:
            # The handle's repr names the coroutine step and where it was created.
            found.append((float(match.group(2)), match.group(1)[:300]))
    return sorted(found, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="big messages per measured server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sendguard-big-"))
    sink = Sink(work)
    try:
        with running(start_sendguard(work / "sg", sink)) as sendguard:
            for run in range(1, args.runs + 1):
                phases = small_during_big(sendguard)
                every = [t for times in phases.values() for t in times]
                print(f"run {run}:", flush=True)
                for phase, times in phases.items():
                    print(f"  while the 20 MB message is {phase}: {summary(times)}", flush=True)
                print(f"  both: {summary(every)}", flush=True)
                posting = small_during_big_post(sendguard)
                print(f"  while a 5 MB JSON message is posted: {summary(posting)}", flush=True)
        debug_env = {**os.environ, "PYTHONASYNCIODEBUG": "1"}
        with running(start_sendguard(work / "sg-debug", sink, env=debug_env)) as sendguard:
            small_during_big(sendguard)
            small_during_big_post(sendguard)
        print("slow callbacks on the event loop (asyncio debug mode, over 100 ms):", flush=True)
        slow = slow_callbacks(work / "sg-debug" / "sendguard.log")
        for seconds, handle in slow:
            print(f"  {seconds * 1000:7.0f} ms  {handle}", flush=True)
        if not slow:
            print("  none", flush=True)
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
