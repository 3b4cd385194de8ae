"""The upstream misbehaves: it is down for a while, it answers 4xx/5xx at MAIL, RCPT or DATA,
it drops the connection in the middle of DATA. Every delivery ends as SMTP says — a 4xx or a
broken connection is retried until it is sent, a 5xx fails — with the upstream's reply kept."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.test_send_path import message, send
from tests.fault.conftest import soak
from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

CODES = ["421 4.4.2 scripted", "451 4.3.0 scripted", "452 4.2.2 scripted"]
CODES += ["550 5.1.1 scripted", "552 5.3.4 scripted", "554 5.7.1 scripted"]
STAGES = ["mail", "rcpt", "data"]


class ScriptedHandler:
    """Answers by the sender's local part: `<code>-<stage>-...` fails that stage once
    (every time for a 5xx), `drop-data-...` drops the connection in DATA once."""

    def __init__(self) -> None:
        self.tries: Counter[str] = Counter()
        self.received: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def scripted(self, sender: str, stage: str) -> str | None:
        code, _, rest = sender.partition("-")
        if not code.isdigit() or not rest.startswith(stage + "-"):
            return None
        with self.lock:
            self.tries[sender] += 1
            first = self.tries[sender] == 1
        if first or code.startswith("5"):
            return next(c for c in CODES if c.startswith(code))
        return None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.scripted(address, "mail")
        if reply:
            return reply
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.scripted(envelope.mail_from or "", "rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.scripted(envelope.mail_from or "", "data")
        if reply:
            return reply
        with self.lock:
            self.received.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
        return "250 2.0.0 Ok"


class DroppingSMTP(SMTP):
    """Closes the connection after the first line of DATA, once per `drop-data-` sender."""

    async def smtp_DATA(self, arg: str) -> None:
        handler: ScriptedHandler = self.event_handler
        sender = self.envelope.mail_from if self.envelope is not None else None
        if sender and sender.startswith("drop-data-"):
            with handler.lock:
                handler.tries[sender] += 1
                first = handler.tries[sender] == 1
            if first:
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self._reader.readline()
                assert self.transport is not None
                self.transport.close()
                return
        await super().smtp_DATA(arg)


class ScriptedController(Controller):
    def factory(self) -> SMTP:
        return DroppingSMTP(self.handler, hostname="127.0.0.1")


def test_each_reply_at_each_stage_ends_as_smtp_says(sendguard: Start) -> None:
    handler = ScriptedHandler()
    port = free_port()
    controller = ScriptedController(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        proc = sendguard(base_config(port))
        cases: dict[str, str] = {}
        for reply in CODES:
            for stage in STAGES:
                sender = f"{reply[:3]}-{stage}-x@example.com"
                cases[sender] = reply
                send(proc, [f"{reply[:3]}.{stage}@example.org"], message(), sender=sender)
        send(proc, ["drop.data@example.org"], message(), sender="drop-data-x@example.com")
        proc.wait_settled(timeout=60)
        wrong = []
        for sender, reply in cases.items():
            rcpt = f"{reply[:3]}.{sender.split('-')[1]}@example.org"
            steps = proc.transitions(rcpt)
            states = [s for s, _ in steps]
            reasons: dict[str, Any] = dict(steps)
            if reply.startswith("4"):
                ok = states[-1] == "sent" and reply in str(reasons.get("deferred"))
            else:
                ok = states[-1] == "failed" and reply in str(reasons.get("failed"))
            if not ok:
                wrong.append((sender, steps))
        steps = proc.transitions("drop.data@example.org")
        if [s for s, _ in steps][-1] != "sent" or "deferred" not in dict(steps):
            wrong.append(("drop-data", steps))
        assert wrong == []
        delivered = Counter(sender for sender, _ in handler.received)
        assert all(n == 1 for n in delivered.values()), delivered
        assert set(delivered) == {s for s, r in cases.items() if r[0] == "4"} | {
            "drop-data-x@example.com"
        }
    finally:
        controller.stop()


def test_upstream_down_then_back_delivers_everything(
    sendguard: Start, figures: Callable[..., None]
) -> None:
    port = free_port()
    proc = sendguard(base_config(port))
    count = soak(20, 200)
    down_for = soak(4.0, 60.0)
    started = time.monotonic()
    ids = [send(proc, [f"d{i}@example.org"], message(subject=f"d{i}")) for i in range(count)]
    time.sleep(max(0.0, down_for - (time.monotonic() - started)))
    assert "sent" not in proc.states().values()
    sink = Sink(port)
    sink.start()
    try:
        came_back = time.monotonic()
        proc.wait_states({f"d{i}@example.org": "sent" for i in range(count)}, timeout=60)
        drained = time.monotonic() - came_back
        subjects = Counter(str(r.message["Subject"]) for r in sink.received)
        assert set(subjects) == {f"d{i}" for i in range(count)}
        assert max(subjects.values()) == 1, subjects
        figures(messages=len(ids), down_seconds=down_for, drained_after_seconds=round(drained, 1))
    finally:
        sink.stop()


def test_dropping_mid_data_is_retried_not_lost(sendguard: Start) -> None:
    """A connection lost in DATA (no final reply) is retried: covered case by case above;
    here many at once, with the pool's connections all broken together."""
    handler = ScriptedHandler()
    port = free_port()
    controller = ScriptedController(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        proc = sendguard(base_config(port))
        for i in range(10):
            send(proc, [f"m{i}@example.org"], message(), sender=f"drop-data-{i}@example.com")
        proc.wait_states({f"m{i}@example.org": "sent" for i in range(10)}, timeout=60)
        assert sorted(s for s, _ in handler.received) == sorted(
            f"drop-data-{i}@example.com" for i in range(10)
        )
    finally:
        controller.stop()
