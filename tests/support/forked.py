"""The test side of tests/support/forkserver.py: `spawn` starts a `sendguard` command as a fork
of this test process's fork server and gives back the part of `subprocess.Popen` the suite uses.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

FORKSERVER = Path(__file__).with_name("forkserver.py")


class ForkedProcess:
    """A child of the fork server: `pid`, `returncode`, `poll`, `wait`, `send_signal`,
    `terminate` and `kill` as `subprocess.Popen` has them. The fork server reaps it and
    reports its exit status."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]) -> None:
        self._server = server
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._server.exit_code(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # as Popen: never signal a pid that may be reused
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One fork server per test process, started at its first `spawn`."""

    def __init__(self, script: str, prefix: Sequence[str]) -> None:
        """`prefix`: tests/support/process.py's DIE_WITH_TEST (setpriv --pdeathsig TERM), so
        that the fork server, and through it every child, ends with the test process."""
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            [*prefix, sys.executable, str(FORKSERVER), script, "1" if prefix else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._ids = itertools.count()
        self._pids: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._gone = False
        ready = json.loads(self._proc.stdout.readline() or b"null")
        if not ready:
            raise RuntimeError(f"the fork server did not start:\n{self._stderr()}")
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True).start()

    def _stderr(self) -> str:
        self._proc.wait(10)
        self._errors.seek(0)
        return self._errors.read().decode(errors="replace")

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            message = json.loads(line)
            with self._changed:
                if "exit" in message:
                    self._exits[message["exit"]] = message["code"]
                else:
                    self._pids[message["id"]] = message["pid"]
                self._changed.notify_all()
        stdout.close()
        with self._changed:
            self._gone = True
            self._changed.notify_all()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def spawn(
        self, args: Sequence[str], cwd: Path, env: dict[str, str], log: Path
    ) -> ForkedProcess:
        """`sendguard ARGS` in `cwd` with `env`, stdout and stderr appended to `log`."""
        with self._lock:
            ident = next(self._ids)
            request = {
                "id": ident,
                "argv": list(args),
                "cwd": str(cwd),
                "env": env,
                "log": str(log),
            }
            self._stdin.write(json.dumps(request).encode() + b"\n")
            self._stdin.flush()
            with self._changed:
                self._changed.wait_for(lambda: ident in self._pids or self._gone, 60)
                pid = self._pids.pop(ident, None)
        if pid is None:
            raise RuntimeError(f"the fork server did not fork:\n{self._stderr()}")
        return ForkedProcess(self, pid, ["sendguard", *args])

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """`pid`'s exit code once it has ended, waiting up to `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or self._gone, timeout)
            if pid not in self._exits and self._gone:
                raise RuntimeError(f"the fork server died:\n{self._stderr()}")
            return self._exits.get(pid)

    def close(self) -> None:
        """End the fork server (it saves its coverage data); its children get SIGTERM."""
        self._stdin.close()
        self._proc.wait(30)
        self._errors.close()


_servers: dict[int, ForkServer] = {}


def fork_server(script: str, prefix: Sequence[str]) -> ForkServer:
    """This test process's fork server (a new one after a fork of the test process, or if the
    last one died)."""
    server = _servers.get(os.getpid())
    if server is None or not server.alive():
        server = _servers[os.getpid()] = ForkServer(script, prefix)
    return server


def uses_fork_server() -> bool:
    return os.environ.get("SENDGUARD_TEST_EXEC", "") in ("", "0")


def close_fork_servers() -> None:
    server = _servers.pop(os.getpid(), None)
    if server is not None and server.alive():
        server.close()
