"""Process CPU time of `sendguard serve` per message: smtp-source into it, smtp-sink behind it.

Usage: python bench/cpu_per_message.py [MESSAGES] — prints `ms CPU per message` (user + system
time of the sendguard process over the run, divided by the messages the sink received) and
msg/s. The config and the traffic are `make bench`'s (`bench/run.py`: the six policies as
shipped, SQLite, SMTP upstream; the 2 KB newsletter of a campaign approved before the run).
Run it alone: it measures CPU time, which other load on the machine barely changes, but its
msg/s is only indicative.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: the sink, the config, smtp-source

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main(messages: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sendguard-cpu-") as tmp:
        work = Path(tmp)
        sink = run.Sink(work)
        try:
            # One process (`--workers 1`): its own CPU time is the whole cost.
            with run.running(run.start_sendguard(work / "sg", sink)) as sendguard:
                assert sendguard.pid is not None
                run.throughput(sink, sendguard.port, 200, run.SMALL, reuse=False)  # warm up
                before = cpu_seconds(sendguard.pid)
                result = run.throughput(sink, sendguard.port, messages, run.SMALL, reuse=False)
                spent = cpu_seconds(sendguard.pid) - before
        finally:
            sink.stop()
        got = int(result["received"])
        print(f"{result['rate']} msg/s, ok={result['ok']}")
        print(f"{spent / max(1, got) * 1000:.2f} ms CPU per message over {got} messages")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
