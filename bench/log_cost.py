"""What one log line of sendguard's own costs: CPU time per line.

    .venv/bin/python bench/log_cost.py [--lines N] [--bound]

`logs.configure("info", "json")` of the checkout this file is in, `message_id` and
`delivery_id` bound with structlog's contextvars (as the dispatcher binds them), then `N` lines
written to stderr (redirect it to a file, as `serve` runs under a supervisor):
`log.info("finished", ...)` with three fields on the module-level lazy proxy, as the
dispatcher writes it, or with `--bound` `log.bind().info("decision", ...)` with seven fields,
as the engine writes it. Prints the process CPU time per line (ns).

For instructions per line, run it under `valgrind --tool=callgrind` with `--lines 0` and
`--lines 2000` and divide the difference of the totals by 2,000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's sendguard
from sendguard import logs

log = structlog.get_logger("sendguard.engine")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=30_000)
    parser.add_argument("--bound", action="store_true")
    options = parser.parse_args()
    logs.configure("info", "json")
    structlog.contextvars.bind_contextvars(
        message_id="m0123456789abcdefghij", delivery_id="d0123456789abcdefghij"
    )
    log.info("warm", lines=options.lines)  # assembles and caches the bound logger
    started = time.process_time()
    for _ in range(options.lines):
        if options.bound:
            log.bind().info(
                "decision",
                message_id="m0123456789abcdefghij",
                delivery_id="d0123456789abcdefghij",
                recipient="someone@example.com",
                verdict="forward",
                reason="schedule: no Not-Before",
                until=None,
                shadow=None,
            )
        else:
            log.info(
                "finished",
                state="sent",
                recipient="someone@example.com",
                reason="250 2.0.0 Ok: queued as 4Xyz",
            )
    cpu = time.process_time() - started
    print(f"{cpu / max(options.lines, 1) * 1e9:.0f} ns of CPU per line")


if __name__ == "__main__":
    main()
