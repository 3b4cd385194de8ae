"""Process CPU time of `sendguard serve` per message: smtp-source into it, smtp-sink behind it.

Usage: python bench/cpu_per_message.py [MESSAGES] — prints `ms CPU per message` (user + system
time of the sendguard process over the run, divided by the messages the sink received) and
msg/s. The config is `make bench`'s (`bench/run.py`: the six policies, SQLite, SMTP upstream,
human_hold's `max_blast` lifted above what a run sends). Run it alone: it measures CPU time,
which other load on the machine barely changes, but its msg/s is only indicative.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
        config = run.sendguard_config(work, sink)  # writes sendguard.yaml
        log = (work / "sendguard.log").open("wb")
        proc = subprocess.Popen(
            # One process: its own CPU time is the whole cost (a supervisor's would not be).
            [str(run.BIN / "sendguard"), "serve", "--config", "sendguard.yaml", "--workers", "1"],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = int(config["smtp"]["listen"].rsplit(":", 1)[1])
            run.wait_port(int(config["http"]["listen"].rsplit(":", 1)[1]))
            run.throughput(sink, port, 200, 2048, reuse=False)  # warm up
            before = cpu_seconds(proc.pid)
            result = run.throughput(sink, port, messages, 2048, reuse=False)
            spent = cpu_seconds(proc.pid) - before
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
            sink.stop()
        got = int(result["received"])
        print(f"{result['rate']} msg/s, ok={result['ok']}")
        print(f"{spent / max(1, got) * 1000:.2f} ms CPU per message over {got} messages")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
