"""Who holds a claim: the sendguard process that made it, named so that it is never mistaken.

A claim (a delivery or webhook event being worked on) names its owner, so that a process that
starts can tell the claims of a process that is gone (released at once) from those of a
sibling worker or another instance that is still running (left alone).

An owner is `host:pid/incarnation`. `host:pid` alone is ambiguous: a pid is reused, and a
container restarted on the same host (same host name) often runs sendguard under the same
pid, so "a process with that pid runs" does not mean "the owner runs". The incarnation names
the process among all that ever had that pid: the kernel's boot id, the pid namespace and the
process's start time (in clock ticks since boot, from /proc). An owner is judged gone only on
the same host, the same boot and the same pid namespace, when no process with its pid and its
start time runs there; anything else counts as running, and its claims are taken over when
their lease ends. Owners written before the incarnation (`host:pid`) are still read, judged
as they were: gone when no process of this host has the pid.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_PROC = Path("/proc")


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        link = str((_PROC / "self/ns/pid").readlink())  # "pid:[4026531836]"
    except OSError:
        return None
    digits = link.removeprefix("pid:[").removesuffix("]")
    return digits if digits.isdigit() else None


_DEAD = ""
"""`_started` of a process that has died but is not reaped yet (a zombie)."""


def _started(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot; `_DEAD` for a zombie; None
    if /proc does not show it (no such process, or one hidden from this user)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ... starttime ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return _DEAD
    return fields[19]  # field 22 of proc(5), counted from field 3 (the state)


def _incarnation(pid: int) -> str | None:
    boot, namespace, started = _boot_id(), _pid_namespace(), _started(pid)
    if boot is None or namespace is None or not started:
        return None
    return f"{boot}.{namespace}.{started}"


def process_owner() -> str:
    """The owner name of this process (`host:pid`, without /proc: not judged by incarnation)."""
    pid = os.getpid()
    incarnation = _incarnation(pid)
    owner = f"{socket.gethostname()}:{pid}"
    return owner if incarnation is None else f"{owner}/{incarnation}"


def owner_gone(owner: str) -> bool:
    """Whether `owner` is certainly no running process.

    An owner of another host, boot or pid namespace, or one this cannot read, counts as
    running: its claims are taken over when their lease ends instead.
    """
    host, _, rest = owner.rpartition(":")
    pid, _, incarnation = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if not incarnation:  # written before owners had an incarnation
        return _pid_gone(int(pid))
    boot, _, rest = incarnation.partition(".")
    namespace, _, started = rest.partition(".")
    if boot != _boot_id() or namespace != _pid_namespace() or not started.isdigit():
        return False
    now = _started(int(pid))
    if now is None:  # not shown: gone, unless it is a process /proc hides (hidepid)
        return _pid_gone(int(pid))
    return now != started  # a zombie, or the pid taken by a later process


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user: alive
        return False
    return False
