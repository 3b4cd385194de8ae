"""kill -9 every 1-4 s under load, then restart: of the messages answered 250, none is lost,
and a message arrives twice only when its send was in flight at a kill — at most as many per
kill as there are delivery workers (each has one send in flight) in all the server's
processes (`serve --workers N`: N processes, each with its own delivery workers)."""

from __future__ import annotations

import random
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.e2e.test_send_path import message
from tests.fault.conftest import soak
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

RESTARTS = soak(3, 10)
WORKERS = 4


class Load:
    """Clients sending one message per connection, each with its own subject, until stopped."""

    def __init__(self, port: int, clients: int = 3) -> None:
        self.port = port
        self.accepted: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _subject(self) -> str:
        with self._lock:
            self._next += 1
            return f"k{self._next}"

    def _run(self) -> None:
        while not self._stop.is_set():
            subject = self._subject()
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                    client.sendmail(
                        "shop@example.com", [f"{subject}@example.org"], message(subject=subject)
                    )
            except (OSError, smtplib.SMTPException):
                with self._lock:
                    self.refused += 1  # the server was down or dying: the client retries later
                time.sleep(0.05)
                continue
            with self._lock:
                self.accepted.append(subject)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_kill_9_under_load_loses_nothing_answered_250(
    sendguard: Start, sink: Sink, figures: Callable[..., None]
) -> None:
    sink.handler.delay = 0.02  # sends take a moment, so kills catch some in flight
    proc = sendguard(delivery={"workers": WORKERS})
    in_flight = WORKERS * max(1, len(proc.worker_pids()))  # sends in flight at most
    kills: list[float] = []
    rng = random.Random(10)
    with Load(proc.smtp_port) as load:
        for _ in range(RESTARTS):
            time.sleep(rng.uniform(1, 4))
            kills.append(time.monotonic())
            proc.kill9()
            proc.start(timeout=30)
        time.sleep(1)
    accepted = set(load.accepted)
    assert len(accepted) > 50, "the load generator barely ran"
    deadline = time.monotonic() + 120
    got: Counter[str] = Counter()
    while time.monotonic() < deadline:
        got = Counter(str(r.message["Subject"]) for r in sink.received)
        if accepted <= set(got):
            break
        time.sleep(0.2)
    lost = accepted - set(got)
    assert not lost, f"{len(lost)} answered 250 never arrived: {sorted(lost)[:10]}"
    assert set(got) <= accepted | {f"k{n}" for n in range(load._next + 1)}

    # A message arrives again when the restarted server re-sends what was in flight at the
    # kill: each duplicate belongs to the last kill before its second arrival.
    seen: set[str] = set()
    per_kill = [0] * len(kills)
    for received in sorted(sink.received, key=lambda r: r.at):
        subject = str(received.message["Subject"])
        if subject not in seen:
            seen.add(subject)
            continue
        before = [i for i, at in enumerate(kills) if at <= received.at]
        assert before, f"{subject} arrived twice before any kill"
        per_kill[before[-1]] += 1
    figures(
        restarts=len(kills),
        answered_250=len(accepted),
        refused_while_down=load.refused,
        lost=len(lost),
        duplicates=sum(per_kill),
        duplicates_per_kill=per_kill,
        workers=WORKERS,
        in_flight=in_flight,
    )
    assert max(per_kill) <= in_flight, per_kill
