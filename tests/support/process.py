"""A real `sendguard serve` process with its own directory, config and ports."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support.forked import ForkedProcess, fork_server, uses_fork_server

SENDGUARD = str(Path(sys.executable).with_name("sendguard"))
TOKEN = "test-token-0123456789"
# `serve --workers` of every server a test starts unless its serve_args say otherwise: one by
# default (what most tests assume of per-process state); SENDGUARD_TEST_WORKERS=2 runs the
# suite against two workers sharing the store.
WORKERS = os.environ.get("SENDGUARD_TEST_WORKERS", "1")
# A server a test starts gets SIGTERM when the test process dies (a pytest run stopped by
# `timeout`, a killed xdist worker): without it such servers lived on, dozens at a time,
# taking the CPU of every later run. setpriv (util-linux) sets it and execs sendguard, so the
# pid stays sendguard's; servers must be started from the test's main thread.
DIE_WITH_TEST = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def _port_range() -> range:
    """This test process's share of 20000-32767: under pytest-xdist each worker has a slice of
    its own, so that two workers never hand out the same port. A port is free when handed
    out, but the server bind comes a second or more later: with both workers drawing from the
    whole range at random, one of them took a port in that gap about once a run ("address
    already in use" at a server's start, seen in session 11's clean-clone run)."""
    low, high = 20_000, 32_768  # below the kernel's ephemeral range (32768 and up)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return range(low, high)
    index = int(worker[2:]) % count
    size = (high - low) // count
    return range(low + index * size, low + (index + 1) * size)


def _ports() -> Iterator[int]:
    """The share's ports in turn from a random start: a port comes round again only after
    every other of the share (thousands of servers later)."""
    share = _port_range()
    start = random.randrange(len(share))
    while True:
        for offset in range(len(share)):
            yield share[(start + offset) % len(share)]


_PORTS = _ports()


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768 and up): a port the kernel
    handed out for `bind(0)` could be handed to an outgoing connection before the server a
    test starts binds it ("address already in use", seen once in a CI run)."""
    for port in _PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: the next
            return port
    raise AssertionError("unreachable: the ports cycle")


def base_config(sink_port: int | None) -> dict[str, Any]:
    """A config on free loopback ports, fast retries, relaying to the sink (or the outbox)."""
    upstream: dict[str, Any] = (
        {"kind": "smtp", "host": "127.0.0.1", "port": sink_port, "starttls": "never"}
        if sink_port is not None
        else {"kind": "outbox", "path": "var/outbox"}
    )
    return {
        "smtp": {"listen": f"127.0.0.1:{free_port()}"},
        "http": {"listen": f"127.0.0.1:{free_port()}", "api_tokens": [TOKEN]},
        "store": {"url": "sqlite:///var/sendguard.db", "busy_timeout": "500ms"},
        "upstream": upstream,
        "delivery": {
            "workers": 4,
            "min_backoff": "1s",
            "max_backoff": "2s",
            "poll_interval": "100ms",
            "drain_timeout": "6s",
        },
        "policies": [{"plugin": "schedule"}],
        "log": {"format": "json"},
    }


class SendguardProcess:
    """Starts, kills and restarts one sendguard in `workdir`."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.proc: subprocess.Popen[bytes] | ForkedProcess | None = None
        self.config_path = workdir / "sendguard.yaml"
        self.log_path = workdir / "sendguard.log"
        self._log_start = 0
        self.serve_args: list[str] = []
        """Extra `serve` arguments (e.g. `--loop asyncio`, `--workers 2`)."""

    @property
    def smtp_port(self) -> int:
        return int(self.config["smtp"]["listen"].rsplit(":", 1)[1])

    @property
    def http_port(self) -> int:
        return int(self.config["http"]["listen"].rsplit(":", 1)[1])

    @property
    def db_path(self) -> Path:
        return self.workdir / "var" / "sendguard.db"

    # Generous: on a shared 2-core machine under a load of 10-30, two workers importing
    # sendguard at once have taken over 15 s to answer; a server that works starts sooner.
    def start(self, timeout: float = 60.0) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        workers = [] if "--workers" in self.serve_args else ["--workers", self._workers()]
        args = [*workers, *self.serve_args]
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = ["serve", "--config", str(self.config_path), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if uses_fork_server():  # tests/support/forkserver.py: the same server, imports paid once
            log.close()
            server = fork_server(SENDGUARD, DIE_WITH_TEST)
            self.proc = server.spawn(command, self.workdir, env, self.log_path)
        else:
            self.proc = subprocess.Popen(
                [*DIE_WITH_TEST, SENDGUARD, *command],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            log.close()
        try:
            self._wait_ready(int(args[args.index("--workers") + 1]), time.monotonic() + timeout)
        except BaseException:
            # A server that did not come up in time is killed, not left behind: the fixture
            # stops only servers that started, and on a loaded machine each one left running
            # made the next start slower still (one run of the story modules left 35).
            self.kill9()
            raise

    def _wait_ready(self, workers: int, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sendguard exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}/healthz", timeout=1
                ) as resp:
                    if resp.status == 200:
                        self._wait_started(workers, deadline)
                        return
            except OSError:
                time.sleep(0.01)
        raise AssertionError(f"sendguard did not start:\n{self.log()}")

    def _workers(self) -> str:
        """`--workers` when the test's serve_args do not say: WORKERS. Review page sign-ins
        are kept in the store (schema 15), so review tests run with any number too."""
        return WORKERS

    def _wait_started(self, workers: int, deadline: float) -> None:
        """With several workers, healthz answers once the first is up: wait for them all (by
        their "sendguard started" lines, when the log is JSON)."""
        if workers == 1 or self.config.get("log", {}).get("format") != "json":
            return
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                started = log.read().count(b'"event":"sendguard started"')
            if started >= workers:
                return
            time.sleep(0.05)
        raise AssertionError(f"not every worker started:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """The worker processes of a `--workers N` server (none when it runs alone)."""
        assert self.proc is not None
        return children(self.proc.pid)

    def smtp_clients(self, count: int) -> list[smtplib.SMTP]:
        """`count` connected SMTP clients, spread evenly over the workers (round robin) when
        there are several: each batch connects while every other worker is stopped, so the
        kernel cannot give them all to the worker that happens to wake first."""
        workers = self.worker_pids() or [0]
        clients: list[smtplib.SMTP] = []
        for index, worker in enumerate(workers):
            share = len(range(index, count, len(workers)))
            with ExitStack() as paused:
                for other in workers:
                    if other not in (0, worker):
                        paused.enter_context(stopped(other))
                clients += [
                    smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) for _ in range(share)
                ]
        return clients

    def kill9(self) -> None:
        """Kill the server with -9; its workers die with it (wait for them too, so that a
        restart finds the ports and the store free)."""
        assert self.proc is not None
        workers = self.worker_pids()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        wait_gone(workers)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def http_get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """An HTTP request to the API; returns (status, parsed JSON or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def _get(self, path: str) -> Any:
        status, answer = self.call("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} answered {status}: {answer}")
        return answer

    def deliveries(self, message_id: str | None = None) -> list[dict[str, Any]]:
        """Every delivery (of one message), oldest first, as the HTTP API shows them."""
        if message_id is not None:
            return list(self._get(f"/v1/messages/{message_id}")["deliveries"])
        found: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = self._get(f"/v1/deliveries?limit=500{cursor}")
            found += page["deliveries"]
            if not page["next_cursor"]:
                return found[::-1]
            cursor = f"&cursor={page['next_cursor']}"

    def states(self, message_id: str | None = None) -> dict[str, str]:
        """recipient -> delivery state (the latest delivery's, per recipient), from the API."""
        return {d["recipient"]: d["state"] for d in self.deliveries(message_id)}

    def wait_states(
        self, want: dict[str, str], message_id: str | None = None, timeout: float = 15.0
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        got: dict[str, str] = {}
        while time.monotonic() < deadline:
            got = self.states(message_id)
            if all(got.get(k) == v for k, v in want.items()):
                return got
            time.sleep(0.05)
        raise AssertionError(f"states {got}, wanted {want}\n{self.log()[-3000:]}")

    def wait_settled(self, timeout: float = 20.0) -> dict[str, str]:
        """Wait until no delivery is queued, sending or deferred: whatever may be sent now has
        been, so what a sink received is final until something waiting becomes due."""
        # Every delivery counts, not only each recipient's latest: a recipient's earlier
        # message still queued behind a later one that was held is not settled.
        deadline = time.monotonic() + timeout
        deliveries: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            deliveries = self.deliveries()
            if not {d["state"] for d in deliveries} & {"queued", "sending", "deferred"}:
                return {d["recipient"]: d["state"] for d in deliveries}
            time.sleep(0.05)
        waiting = [(d["recipient"], d["state"]) for d in deliveries]
        raise AssertionError(f"not settled: {waiting}\n{self.log()[-3000:]}")

    def transitions(self, recipient: str) -> list[tuple[str, str]]:
        """(state, reason) of every step of every delivery to `recipient`, oldest first."""
        found: list[dict[str, Any]] = []
        cursor = ""
        path = f"/v1/recipients/{urllib.parse.quote(recipient, safe='')}/timeline?limit=500"
        while True:
            page = self._get(path + cursor)
            found += page["deliveries"]
            if not page["next_cursor"]:
                break
            cursor = f"&cursor={page['next_cursor']}"
        return [(t["state"], t["reason"]) for d in found[::-1] for t in d["transitions"]]

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """`pid` stopped (SIGSTOP) meanwhile: a stopped worker accepts no connection, its
    siblings take them all."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float = 20.0) -> None:
    """Wait until none of `pids` runs."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running: {[p for p in pids if alive(p)]}")
        time.sleep(0.02)


def run_with_config(command: str, config: dict[str, Any], workdir: Path) -> tuple[int, str]:
    """`sendguard COMMAND --config FILE` with `config` written to `workdir`: (exit, output)."""
    path = workdir / "sendguard.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [SENDGUARD, command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=workdir,
    )
    return done.returncode, done.stdout + done.stderr
