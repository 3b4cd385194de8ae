"""`sendguard serve --workers N`: N worker processes, one supervisor, the same guarantees.

The supervisor binds the SMTP and HTTP listeners once, takes the SQLite store's file lock
(PostgreSQL needs none), makes the counts of SMTP connections the workers share (so
`smtp.max_connections` and `max_connections_per_ip` hold for the serve, not per worker) and
starts N workers — each a whole sendguard (`App`) — that inherit those descriptors. It serves
nothing itself, starts no thread and no event loop; it waits for signals:
- SIGCHLD: a worker ended. Its SMTP connections are counted out of the shared counts
  (sendguard/connection_counts.py). Outside a stop it is started again at once (after a pause
  if that worker had not lived a second, so a crash loop does not spin). A worker that fails while
  starting with sendguard's own exit status stops the whole serve with that status when it
  is 2 (the config became invalid) or when no other worker is running (1: cannot start, e.g.
  the database is unreadable): starting it again would fail the same way.
- SIGTERM / SIGINT: forwarded as SIGTERM to every worker; each drains (sessions in DATA are
  answered, sends under way finish) and exits; the supervisor exits 0 once all did with 0.
- SIGHUP: forwarded to one worker, which reloads as for `POST /v1/admin/reload` (below).
- A reload: the worker that was asked (over the API or by SIGHUP) reloads, then asks the
  supervisor, over the control line each worker inherits (a socket pair; one JSON object a
  line), to have every other worker reload; the supervisor asks each, collects their answers
  (a worker that exits or does not answer within RELOAD_TIMEOUT is reported as such) and
  hands them back, so the reload is answered once every worker runs the new config, or says
  which does not.
The supervisor waits for signals and control lines at once: the signals stay blocked and are
read from a signalfd.
Killed with -9 itself, it takes its workers along (PR_SET_PDEATHSIG), as killing the single
process would: no orphan keeps the ports or the store lock.

Why one inherited socket and not SO_REUSEPORT: every worker accepts from the same kernel
queue, so a worker that dies loses only the connections it had accepted (with SO_REUSEPORT
the connections queued on its own socket would be reset), a busy worker simply accepts less,
the ports are bound once (port 0 and "address in use" behave as for one process), and no
unrelated process can join the listeners by setting SO_REUSEPORT on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from sendguard.config import Config
from sendguard.connection_counts import ConnectionCounts
from sendguard.listeners import bind
from sendguard.metrics import MULTIPROC_DIR
from sendguard.reload import WorkerReload
from sendguard.store import open_store
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
# How long the supervisor waits for each other worker to answer a reload.
RELOAD_TIMEOUT = 10.0
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1
_SIGINFO = 128  # sizeof(struct signalfd_siginfo); ssi_signo is its first uint32


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
    control_fd: int | None = None
    """This worker's end of its control line to the supervisor."""
    connections_fd: int | None = None
    """The SMTP connections every worker holds (sendguard.connection_counts)."""
    slot: int = 0
    """This worker's place among the N (the region of the connection counts it writes)."""

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

    def connection_counts(self) -> ConnectionCounts | None:
        """The SMTP connections of the whole serve, counted in this worker's slot."""
        if self.connections_fd is None:
            return None
        return ConnectionCounts.attach(self.connections_fd, self.slot)


def _die_with_parent(parent: int) -> None:
    """In a new worker, before it runs sendguard: signals as by default but SIGHUP, which stays
    blocked until the worker can reload (the app unblocks it; one the supervisor passes on
    while the worker starts waits for it instead of ending it); SIGKILL when the supervisor
    dies. Runs between fork and exec, so it only calls async-signal-safe things."""
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGHUP})
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _signalfd(numbers: set[signal.Signals]) -> int:
    """A descriptor from which the (blocked) signals `numbers` are read, non-blocking."""
    mask = ctypes.create_string_buffer(128)  # sigset_t
    _LIBC.sigemptyset(mask)
    for number in numbers:
        _LIBC.sigaddset(mask, int(number))
    fd = int(_LIBC.signalfd(-1, mask, os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"signalfd: {os.strerror(errno)}")
    return fd


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


@dataclass
class _Slot:
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    control: socket.socket | None = None
    """The supervisor's end of this worker's control line."""
    received: bytes = b""
    """What came on it after the last whole line."""


@dataclass
class _Reload:
    """A reload one worker did, which the supervisor is having the others do."""

    requester: int
    """The asking worker's pid."""
    ask: int
    """The asking worker's number for it."""
    actor: str
    deadline: float
    waiting: dict[int, int] = field(default_factory=dict)
    """pid -> slot of each worker that has not answered yet."""
    results: list[dict[str, Any]] = field(default_factory=list)


class Supervisor:
    """Starts, watches and stops the workers of one `serve --workers N`."""

    def __init__(self, config: Config, config_path: Path | None, loop: str, workers: int) -> None:
        self._config = config
        self._config_path = config_path
        self._loop = loop
        self._slots = [_Slot() for _ in range(workers)]
        self._handoff: Handoff | None = None
        self._counts: ConnectionCounts | None = None
        self._fds: tuple[int, ...] = ()
        self._stopping = False
        self._status = 0
        self._selector = selectors.DefaultSelector()
        self._reloads: dict[int, _Reload] = {}
        self._reload_ids = itertools.count(1)

    def run(self) -> int:
        """Serve until SIGTERM; the exit status of the whole serve. Raises StoreLocked and
        OSError (cannot listen) before any worker starts."""
        store = self._config.store
        lock_fd = lock_for_workers(open_store(store.url, store.settings()))
        metrics_dir = tempfile.mkdtemp(prefix="sendguard-metrics-")
        try:
            with contextlib.ExitStack() as held:
                smtp = [
                    held.enter_context(bind(listener.listen, listener.field("listen")))
                    for listener in self._config.smtp.listeners_in_use()
                ]
                http = held.enter_context(bind(self._config.http.listen, "http.listen"))
                # Counted for the whole serve, so the caps do not multiply by the workers.
                smtp_options = self._config.smtp
                self._counts = counts = ConnectionCounts.make(
                    smtp_options.max_connections,
                    smtp_options.max_connections_per_ip,
                    len(self._slots),
                )
                held.callback(counts.close)
                assert counts.fd is not None
                self._handoff = Handoff(
                    [s.fileno() for s in smtp],
                    http.fileno(),
                    lock_fd,
                    metrics_dir,
                    os.getpid(),
                    connections_fd=counts.fd,
                )
                self._fds = (*self._handoff.smtp_fds, http.fileno(), counts.fd) + (
                    (lock_fd,) if lock_fd is not None else ()
                )
                return self._supervise()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if lock_fd is not None:
                os.close(lock_fd)

    def _supervise(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        signals = _signalfd(_SIGNALS)
        self._selector.register(signals, selectors.EVENT_READ, None)
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
                for key, _ in self._selector.select(self._next_timeout(deadline)):
                    if key.data is None:
                        for number in self._read_signals(signals):
                            self._on_signal(number)
                    else:
                        self._on_control(key.data)
                if self._stopping and deadline is None:
                    drain = self._config.delivery.drain_timeout.total_seconds()
                    deadline = time.monotonic() + drain + STOP_MARGIN
                self._reap()
                self._expire_reloads()
                self._restart_due()
                if deadline is not None and time.monotonic() >= deadline:
                    self._kill_all()
                    self._status = self._status or 1
            log.info("workers stopped", status=self._status)
            return self._status
        finally:
            self._kill_all()
            self._selector.close()
            os.close(signals)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    @staticmethod
    def _read_signals(fd: int) -> list[int]:
        numbers: list[int] = []
        while True:
            try:
                data = os.read(fd, _SIGINFO * 16)
            except BlockingIOError:
                return numbers
            numbers += (
                struct.unpack_from("I", data, at)[0] for at in range(0, len(data), _SIGINFO)
            )

    def _running(self) -> bool:
        if not self._stopping:
            return True
        return any(s.process is not None for s in self._slots)

    def _next_timeout(self, deadline: float | None) -> float:
        now = time.monotonic()
        moments = [s.restart_at for s in self._slots if s.restart_at is not None]
        moments += [r.deadline for r in self._reloads.values()]
        if deadline is not None:
            moments.append(deadline)
        return max(0.0, min(moments) - now) if moments else 60.0

    def _on_signal(self, number: int) -> None:
        if number in (signal.SIGTERM, signal.SIGINT):
            if not self._stopping:
                log.info("stopping workers", signal=signal.Signals(number).name)
            self._stopping = True
            self._send(signal.SIGTERM)
        elif number == signal.SIGHUP:
            # One worker reloads and has the others reload (one audit entry, one outcome).
            first = next((s.process for s in self._slots if s.process is not None), None)
            if first is not None and not self._stopping:
                with contextlib.suppress(ProcessLookupError):
                    first.send_signal(signal.SIGHUP)

    def _on_control(self, index: int) -> None:
        """Read what worker `index` said on its control line; act on each whole line."""
        slot = self._slots[index]
        if slot.control is None:
            return
        try:
            data = slot.control.recv(65536)
        except OSError:
            data = b""
        if not data:  # the worker is gone (or closed it): nothing more will come
            self._close_control(slot)
            return
        *lines, slot.received = (slot.received + data).split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("unreadable control line", worker=index, line=line[:200])
                continue
            if message.get("op") == "reload":
                self._reload_others(index, int(message["id"]), str(message["actor"]))
            elif message.get("op") == "reloaded":
                self._reloaded(index, int(message["id"]), dict(message["result"]))

    def _reload_others(self, asking: int, ask: int, actor: str) -> None:
        """Worker `asking` has reloaded: have every other running worker do the same."""
        process = self._slots[asking].process
        if process is None:
            return
        number = next(self._reload_ids)
        reload = _Reload(process.pid, ask, actor, time.monotonic() + RELOAD_TIMEOUT)
        self._reloads[number] = reload
        for index, slot in enumerate(self._slots):
            other = slot.process
            if index == asking or other is None:
                # A worker being replaced reads the config file as it starts.
                continue
            if self._tell(slot, {"op": "reload", "id": number, "actor": actor}):
                reload.waiting[other.pid] = index
            else:
                reload.results.append(_failed(other.pid, "its control line is closed"))
        self._finish(number)

    def _reloaded(self, index: int, number: int, result: dict[str, Any]) -> None:
        reload = self._reloads.get(number)
        process = self._slots[index].process
        if reload is None or process is None or reload.waiting.pop(process.pid, None) is None:
            return  # answered too late, or twice
        reload.results.append(result)
        self._finish(number)

    def _finish(self, number: int) -> None:
        """Hand the results of reload `number` to the worker that asked, once all are in."""
        reload = self._reloads[number]
        if reload.waiting:
            return
        del self._reloads[number]
        for slot in self._slots:
            if slot.process is not None and slot.process.pid == reload.requester:
                self._tell(slot, {"op": "others", "id": reload.ask, "workers": reload.results})
        failed = [r for r in reload.results if not r.get("reloaded")]
        if failed:
            log.error("reload not done by every worker", actor=reload.actor, failed=failed)

    def _expire_reloads(self) -> None:
        now = time.monotonic()
        for number, reload in list(self._reloads.items()):
            if reload.deadline <= now:
                for pid in list(reload.waiting):
                    del reload.waiting[pid]
                    reload.results.append(_failed(pid, f"no answer within {RELOAD_TIMEOUT:g} s"))
                self._finish(number)

    def _tell(self, slot: _Slot, message: dict[str, Any]) -> bool:
        """Write one line to a worker; False when it cannot take it (gone, or not reading)."""
        if slot.control is None:
            return False
        try:
            slot.control.sendall(_line(message))
        except OSError:
            return False
        return True

    def _close_control(self, slot: _Slot) -> None:
        if slot.control is not None:
            self._selector.unregister(slot.control)
            slot.control.close()
            slot.control = None
            slot.received = b""

    def _send(self, number: signal.Signals, skip: int = 0) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.pid != skip:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(number)

    def _start(self, index: int) -> None:
        assert self._handoff is not None
        slot = self._slots[index]
        self._close_control(slot)
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            handoff = replace(self._handoff, control_fd=theirs.fileno(), slot=index)
            command = [sys.executable, "-m", "sendguard", "serve", "--loop", self._loop]
            if self._config_path is not None:
                command += ["--config", str(self._config_path)]
            command += ["--worker-handoff", handoff.encode()]
            parent = os.getpid()
            slot.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command,
                pass_fds=(*self._fds, theirs.fileno()),
                env={**os.environ, MULTIPROC_DIR: self._handoff.metrics_dir},
                preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509 - no threads here
            )
        # A worker that stops reading its line cannot hold the supervisor up for long.
        control.settimeout(1.0)
        slot.control = control
        self._selector.register(control, selectors.EVENT_READ, index)
        slot.started = time.monotonic()
        slot.restart_at = None

    def _reap(self) -> None:
        for index, slot in enumerate(self._slots):
            process = slot.process
            if process is None or process.poll() is None:
                continue
            slot.process = None
            self._close_control(slot)
            if self._counts is not None:
                # Its SMTP connections died with it (even killed with -9, with no chance to
                # count them out): the worker that replaces it starts from none.
                self._counts.reset(index)
            self._gone(process.pid)
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

    def _gone(self, pid: int) -> None:
        """Worker `pid` exited: it answers no reload, and asks for none any more."""
        for number, reload in list(self._reloads.items()):
            if reload.requester == pid:
                del self._reloads[number]
            elif reload.waiting.pop(pid, None) is not None:
                reload.results.append(
                    _failed(pid, "exited before it answered (a new worker reads the config file)")
                )
                self._finish(number)

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
            self._close_control(slot)


def _failed(pid: int, why: str) -> dict[str, Any]:
    return WorkerReload(pid, False, None, why).as_dict()


class ControlLine:
    """A worker's side of its control line: has the other workers reload after this one did,
    and reloads when another one did."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)
        self._writer: asyncio.StreamWriter | None = None
        self._asks: dict[int, asyncio.Future[list[WorkerReload]]] = {}
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, follow: Callable[[str], Awaitable[WorkerReload]]) -> None:
        """Listen to the supervisor; `follow(actor)` reloads because another worker did."""
        reader, self._writer = await asyncio.open_unix_connection(sock=self._socket)
        self._spawn(self._listen(reader, follow))

    async def reload_others(self, actor: str) -> list[WorkerReload]:
        """Have every other worker reload (this one has); what each made of it."""
        if self._writer is None or self._writer.is_closing():
            return [WorkerReload(0, False, None, "no control line to the supervisor")]
        number = next(self._numbers)
        answer = self._asks[number] = asyncio.get_running_loop().create_future()
        try:
            self._writer.write(_line({"op": "reload", "id": number, "actor": actor}))
            await self._writer.drain()
            # The supervisor answers within RELOAD_TIMEOUT, whatever the others do.
            return await asyncio.wait_for(answer, RELOAD_TIMEOUT + 5)
        except (OSError, TimeoutError) as exc:
            why = "the supervisor did not answer" if isinstance(exc, TimeoutError) else str(exc)
            return [WorkerReload(0, False, None, why)]
        finally:
            del self._asks[number]

    async def _listen(
        self, reader: asyncio.StreamReader, follow: Callable[[str], Awaitable[WorkerReload]]
    ) -> None:
        while line := await reader.readline():
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("unreadable control line", line=line[:200])
                continue
            if message.get("op") == "reload":
                self._spawn(self._follow(int(message["id"]), str(message["actor"]), follow))
            elif message.get("op") == "others":
                answer = self._asks.get(int(message["id"]))
                if answer is not None and not answer.done():
                    answer.set_result([WorkerReload.from_dict(w) for w in message["workers"]])

    async def _follow(
        self, number: int, actor: str, follow: Callable[[str], Awaitable[WorkerReload]]
    ) -> None:
        try:
            result = await follow(actor)
        except Exception as exc:  # whatever failed, the asking worker hears it
            log.exception("reload failed", actor=actor)
            result = WorkerReload(os.getpid(), False, None, f"failed: {exc!r}")
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(_line({"op": "reloaded", "id": number, "result": result.as_dict()}))
            with contextlib.suppress(OSError):
                await self._writer.drain()

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening; a reload being followed is cancelled, one waiting for the others
        learns nothing more."""
        for answer in self._asks.values():
            if not answer.done():
                answer.set_result([WorkerReload(0, False, None, "this worker is stopping")])
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
