"""`sendguard serve --workers N`: N worker processes, one supervisor, the same guarantees.

The supervisor binds the SMTP and HTTP listeners once, takes the SQLite store's file lock
(PostgreSQL needs none) and starts N workers — each a whole sendguard (`App`) — that inherit
those descriptors. It serves nothing itself, starts no thread and no event loop; it waits for
signals:
- SIGCHLD: a worker ended. Outside a stop it is started again at once (after a pause if that
  worker had not lived a second, so a crash loop does not spin). A worker that fails while
  starting with sendguard's own exit status stops the whole serve with that status when it
  is 2 (the config became invalid) or when no other worker is running (1: cannot start, e.g.
  the database is unreadable): starting it again would fail the same way.
- SIGTERM / SIGINT: forwarded as SIGTERM to every worker; each drains (sessions in DATA are
  answered, sends under way finish) and exits; the supervisor exits 0 once all did with 0.
- SIGHUP: forwarded to every worker; each reloads its config. A reload asked for over the
  API reaches one worker, which reloads and sends SIGHUP to the supervisor, which forwards it
  to the others.
Killed with -9 itself, it takes its workers along (PR_SET_PDEATHSIG), as killing the single
process would: no orphan keeps the ports or the store lock.

Why one inherited socket and not SO_REUSEPORT: every worker accepts from the same kernel
queue, so a worker that dies loses only the connections it had accepted (with SO_REUSEPORT
the connections queued on its own socket would be reset), a busy worker simply accepts less,
the ports are bound once (port 0 and "address in use" behave as for one process), and no
unrelated process can join the listeners by setting SO_REUSEPORT on the same port.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from sendguard.config import Config
from sendguard.listeners import bind
from sendguard.store.sqlite import lock_for_workers

log = structlog.get_logger("sendguard.workers")

# How long a worker must have lived for its failure to count as a crash (restarted) rather
# than as a failure to start (the serve stops with the worker's status).
STARTUP_GRACE = 10.0
# The shortest time between two starts of one worker slot.
RESTART_PAUSE = 1.0
# Beyond delivery.drain_timeout, how long the supervisor waits for workers to exit on stop
# before it kills them.
STOP_MARGIN = 10.0
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    """The CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Handoff:
    """What a worker inherits from its supervisor (passed as `serve --worker-handoff`)."""

    smtp_fds: list[int]
    """One per SMTP listener, in the order of `smtp.listeners` (or `smtp.listen`)."""
    http_fd: int
    lock_fd: int | None
    metrics_dir: str
    supervisor: int

    def encode(self) -> str:
        """The command-line form."""
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> Handoff:
        """From the command-line form."""
        return cls(**json.loads(text))

    def smtp_sockets(self) -> list[socket.socket]:
        """The inherited SMTP listeners."""
        return [socket.socket(fileno=fd) for fd in self.smtp_fds]

    def http_socket(self) -> socket.socket:
        """The inherited HTTP listener."""
        return socket.socket(fileno=self.http_fd)


def _die_with_parent(parent: int) -> None:
    """In a new worker, before it runs sendguard: signals as by default, SIGKILL when the
    supervisor dies. Runs between fork and exec, so it only calls async-signal-safe things."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class _Slot:
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None


class Supervisor:
    """Starts, watches and stops the workers of one `serve --workers N`."""

    def __init__(self, config: Config, config_path: Path | None, loop: str, workers: int) -> None:
        self._config = config
        self._config_path = config_path
        self._loop = loop
        self._slots = [_Slot() for _ in range(workers)]
        self._handoff: Handoff | None = None
        self._fds: tuple[int, ...] = ()
        self._stopping = False
        self._status = 0

    def run(self) -> int:
        """Serve until SIGTERM; the exit status of the whole serve. Raises StoreLocked and
        OSError (cannot listen) before any worker starts."""
        lock_fd = lock_for_workers(self._config.store.url)
        metrics_dir = tempfile.mkdtemp(prefix="sendguard-metrics-")
        try:
            with contextlib.ExitStack() as held:
                smtp = [
                    held.enter_context(bind(listener.listen, listener.field("listen")))
                    for listener in self._config.smtp.listeners_in_use()
                ]
                http = held.enter_context(bind(self._config.http.listen, "http.listen"))
                self._handoff = Handoff(
                    [s.fileno() for s in smtp], http.fileno(), lock_fd, metrics_dir, os.getpid()
                )
                self._fds = (*self._handoff.smtp_fds, http.fileno()) + (
                    (lock_fd,) if lock_fd is not None else ()
                )
                return self._supervise()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if lock_fd is not None:
                os.close(lock_fd)

    def _supervise(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(len(self._slots)):
                self._start(index)
            log.info(
                "workers started",
                workers=len(self._slots),
                pids=[s.process.pid for s in self._slots if s.process is not None],
                smtp=[x.listen for x in self._config.smtp.listeners_in_use()],
                http=self._config.http.listen,
            )
            deadline: float | None = None
            while self._running():
                timeout = self._next_timeout(deadline)
                info = signal.sigtimedwait(_SIGNALS, timeout)
                if info is not None:
                    self._on_signal(info)
                    if self._stopping and deadline is None:
                        drain = self._config.delivery.drain_timeout.total_seconds()
                        deadline = time.monotonic() + drain + STOP_MARGIN
                self._reap()
                self._restart_due()
                if deadline is not None and time.monotonic() >= deadline:
                    self._kill_all()
                    self._status = self._status or 1
            log.info("workers stopped", status=self._status)
            return self._status
        finally:
            self._kill_all()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _running(self) -> bool:
        if not self._stopping:
            return True
        return any(s.process is not None for s in self._slots)

    def _next_timeout(self, deadline: float | None) -> float:
        now = time.monotonic()
        moments = [s.restart_at for s in self._slots if s.restart_at is not None]
        if deadline is not None:
            moments.append(deadline)
        return max(0.0, min(moments) - now) if moments else 60.0

    def _on_signal(self, info: signal.struct_siginfo) -> None:
        number = info.si_signo
        if number in (signal.SIGTERM, signal.SIGINT):
            if not self._stopping:
                log.info("stopping workers", signal=signal.Signals(number).name)
            self._stopping = True
            self._send(signal.SIGTERM)
        elif number == signal.SIGHUP:
            # A worker that asked (an API reload) has reloaded already.
            self._send(signal.SIGHUP, skip=info.si_pid)

    def _send(self, number: signal.Signals, skip: int = 0) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.pid != skip:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(number)

    def _start(self, index: int) -> None:
        assert self._handoff is not None
        slot = self._slots[index]
        command = [sys.executable, "-m", "sendguard", "serve", "--loop", self._loop]
        if self._config_path is not None:
            command += ["--config", str(self._config_path)]
        command += ["--worker-handoff", self._handoff.encode()]
        parent = os.getpid()
        slot.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            pass_fds=self._fds,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._handoff.metrics_dir},
            preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509 - no threads here
        )
        slot.started = time.monotonic()
        slot.restart_at = None

    def _reap(self) -> None:
        for slot in self._slots:
            process = slot.process
            if process is None or process.poll() is None:
                continue
            slot.process = None
            status = process.returncode
            lived = time.monotonic() - slot.started
            if self._stopping:
                # A worker still starting when the SIGTERM came dies of it before its own
                # handler is installed: stopped as asked, not a failure.
                if status not in (0, -signal.SIGTERM):
                    log.warning("worker exited", pid=process.pid, status=status)
                    self._status = self._status or 1
                continue
            others = any(other.process is not None for other in self._slots)
            if status in (1, 2) and lived < STARTUP_GRACE and (status == 2 or not others):
                log.error("worker failed to start; stopping", pid=process.pid, status=status)
                self._status = status
                self._stopping = True
                self._send(signal.SIGTERM)
                continue
            log.warning(
                "worker died; starting another",
                pid=process.pid,
                status=status,
                lived=round(lived, 3),
            )
            slot.restart_at = slot.started + RESTART_PAUSE

    def _restart_due(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        for index, slot in enumerate(self._slots):
            if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(index)

    def _kill_all(self) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()
                slot.process = None
