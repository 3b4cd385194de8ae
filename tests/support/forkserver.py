"""A fork server for the servers the suite starts: `sendguard serve` without paying its imports.

A server start was about 1.1 s of CPU under coverage, 85 % of it importing sendguard, pydantic,
aiohttp and the rest, and the suite starts about 600 servers: a third of its CPU time. The fork
server is one Python per test process that has imported what `serve` imports (`PRELOAD`) and
holds no thread; each start forks it, and the child becomes the server as a fresh process would:
the test's working directory, environment and log file, default signal handling, SIGTERM when
its parent dies, `sys.argv` as the `sendguard` script's, coverage restarted for the child, then
`sendguard.cli.main()` and the interpreter's normal exit (atexit, non-daemon threads).

What differs from an exec'd `sendguard serve`, on purpose and harmless to what tests check:
the modules are imported before the config is read (aiohttp's default TLS context starts without
the CA bundle and `client_tls` loads it before any HTTPS client, as `serve` does after a reload),
`PYTHONHASHSEED`-style start-up settings are the fork server's, and /proc/PID/cmdline names it.
`serve --workers N` still execs its workers. Tests that start `sendguard` with subprocess
themselves (tests/e2e/test_serve_cli.py and others) keep exercising the exec'd start, and
`SENDGUARD_TEST_EXEC=1` makes every server exec'd again.

The fork server runs this file as a script (stdlib only at the top, so that multiprocessing's
spawn, which imports the parent's `__main__` by path, finds nothing to run). Protocol: JSON
lines; a request `{"id", "argv", "cwd", "env", "log"}` on its stdin, `{"id", "pid"}` once
forked and `{"exit": pid, "code"}` (`subprocess`'s returncode convention) on its stdout.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any

# What `sendguard serve` imports on its way to a running server (sendguard/cli.py's _serve and
# what the app loads lazily), in that order: sendguard.logs first, as there.
PRELOAD = (
    "sendguard.cli",
    "sendguard.logs",
    "sendguard.offload",
    "sendguard.malloc_tuning",
    "sendguard.client_tls",
    "sendguard.reload",
    "*aiohttp",  # through client_tls.import_aiohttp(False): see sendguard/client_tls.py
    "sendguard.app",
    "sendguard.workers",
    "sendguard.store.sqlite",
    "sendguard.store.postgres",
    "sendguard.delivery.builtin",
    "uvloop",
)
PR_SET_PDEATHSIG = 1


def _preload() -> None:
    import importlib  # noqa: PLC0415

    for name in PRELOAD:
        if name == "*aiohttp":
            from sendguard import client_tls  # noqa: PLC0415

            client_tls.import_aiohttp(False)
        else:
            importlib.import_module(name)
    # The built-in policies load through their entry points when a config names them.
    from importlib.metadata import entry_points  # noqa: PLC0415

    for entry in entry_points(group="sendguard.policies"):
        if entry.value.startswith(("sendguard_plugins", "sendguard.")):
            entry.load()
    assert threading.active_count() == 1, "a preloaded module started a thread: fork is unsafe"


def _send(message: dict[str, Any]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


def _serve_forks() -> dict[str, Any]:
    """Fork a child per request and report how each ends. Returns only in a child, with the
    request it is to carry out; the fork server itself leaves by SystemExit (its stdin closed or
    SIGTERM), so coverage and atexit run as in any process."""
    children: dict[int, int] = {}  # pidfd: pid
    pending = b""
    while True:
        ready, _, _ = select.select([0, *children], [], [])
        for fd in ready:
            if fd != 0:
                pid = children.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                _send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                sys.exit(0)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request: dict[str, Any] = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    return request
                children[os.pidfd_open(pid)] = pid
                _send({"id": request["id"], "pid": pid})


def _become(request: dict[str, Any], script: str, die_with_parent: bool) -> None:
    """Turn the forked child into the process `request` describes."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()
    if die_with_parent:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the fork server died before the line above
            os._exit(1)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    # PYTHONUNBUFFERED, as the suite starts its servers with.
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace"
    )
    sys.argv = [script, *request["argv"]]
    sys.path[0] = str(Path(script).parent)  # where a `sendguard` script's Python starts
    try:
        from coverage.control import _after_fork_in_child  # noqa: PLC0415
    except ImportError:
        return
    _after_fork_in_child()  # a data file of the child's own, or nothing without coverage


def _main() -> None:
    script, die_with_parent = sys.argv[1], sys.argv[2] == "1"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _preload()
    _send({"ready": os.getpid()})
    request = _serve_forks()
    _become(request, script, die_with_parent)
    from sendguard.cli import main  # noqa: PLC0415 - preloaded: this is a lookup

    sys.exit(main())


if __name__ == "__main__":
    _main()
