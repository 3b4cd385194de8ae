"""The `process_*` metrics of a whole `serve --workers N` service, not of one worker.

A scrape is answered by whichever worker takes the connection, and prometheus-client's
`ProcessCollector` reports that process alone: `process_cpu_seconds_total` was one worker's
CPU, and `rate()` of it jumped between workers from scrape to scrape. A Prometheus user reads
it as the service's. So under workers the families cover the supervisor and every process
below it (the workers and their offload processes), read from /proc at scrape time:

- `process_cpu_seconds_total`: the user and system time of every live process of the tree,
  with what each has reaped of its children (`cutime`, `cstime`): a worker that died and was
  restarted still counts, so the counter does not go back.
- `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`: summed
  (a page shared by several processes counts once per process, as summing `ps` RSS does).
- `process_max_fds`: the answering process's limit (each process has its own).
- `process_start_time_seconds`: the supervisor's start.

Without /proc (not Linux) the answering process's own values are reported, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ServiceProcessCollector"]

_PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return text.rpartition(")")[2].split()


def _children(pid: int) -> list[int]:
    """The live children of `pid` (every thread's, as /proc lists them per thread)."""
    found: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree(root: int) -> list[int]:
    """`root` and every process below it."""
    pids, index = [root], 0
    while index < len(pids) and len(pids) < 10_000:  # bounded: a tree, never a loop
        pids += _children(pids[index])
        index += 1
    return pids


def _open_fds(pid: int) -> int:
    try:
        return sum(1 for _ in (_PROC / str(pid) / "fd").iterdir())
    except OSError:
        return 0


def _max_fds() -> float | None:
    try:
        for line in (_PROC / "self" / "limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return float(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ServiceProcessCollector(Collector):
    """`process_*` of the process tree under `root` (the supervisor of the workers)."""

    def __init__(self, root: int) -> None:
        self._root = root
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGESIZE")
        boot = 0.0
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                boot = float(line.split()[1])
        self._boot = boot

    def collect(self) -> Iterable[Metric]:
        cpu = rss = vsize = fds = 0.0
        start: float | None = None
        for pid in _tree(self._root):
            fields = _stat(pid)
            if fields is None:
                continue
            # stat(5): utime 14, stime 15, cutime 16, cstime 17, starttime 22, vsize 23, rss 24.
            cpu += sum(int(fields[i]) for i in (11, 12, 13, 14)) / self._ticks
            vsize += int(fields[20])
            rss += int(fields[21]) * self._page
            fds += _open_fds(pid)
            if pid == self._root:
                start = self._boot + int(fields[19]) / self._ticks
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds (the supervisor and every worker)",
            value=cpu,
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes (summed over the supervisor and every worker)",
            value=vsize,
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory size in bytes (summed over the supervisor and every worker)",
            value=rss,
        )
        if start is not None:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds (the supervisor's)",
                value=start,
            )
        yield GaugeMetricFamily(
            "process_open_fds",
            "Number of open file descriptors (summed over the supervisor and every worker)",
            value=fds,
        )
        limit = _max_fds()
        if limit is not None:
            yield GaugeMetricFamily(
                "process_max_fds", "Maximum number of open file descriptors.", value=limit
            )
