"""The intake's `accepted` line comes after the ingress's answer, with the message's id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from structlog.testing import capture_logs

from sendguard.engine import PolicyBinding
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Verdict
from tests.unit.test_engine import Scripted, engine

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
RAW = b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: Hello\r\n\r\nHello.\r\n"


async def test_the_accepted_line_is_written_after_accept_returns(store: SQLiteStore) -> None:
    clock = FakeClock(T0)
    forwards = engine(
        store, PolicyBinding("forwarding", Scripted(Verdict.forward("ok"))), clock=clock
    )
    intake = Intake(forwards, store, clock, Metrics(), {}, lambda: None, "t.example")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        accepted = await intake.accept(
            RAW, "shop@example.com", ["ann@example.org", "bo@example.org"], "smtp"
        )
        # What the SMTP ingress does before its reply is written in this same turn.
        structlog.contextvars.unbind_contextvars("message_id")
        assert [line for line in lines if line["event"] == "accepted"] == []
        await asyncio.sleep(0)  # the loop's next turn
    (line,) = [line for line in lines if line["event"] == "accepted"]
    assert line["message_id"] == accepted.message.id  # bound when it was asked for
    assert (line["ingress"], line["recipients"], line["size"]) == (
        "smtp",
        2,
        accepted.message.size,
    )
    assert line["log_level"] == "info"
