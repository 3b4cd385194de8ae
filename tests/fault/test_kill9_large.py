"""kill -9 while a 20 MB message's content is being written in pieces (sql_content.py): what
was answered 250 before is kept and forwarded, the large message (never answered) is nowhere
to be seen, and its pieces are removed when the server starts again."""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
import threading
import time
from collections.abc import Callable

import asyncpg
import pytest

from sendguard.store.sql_content import CHUNK
from tests.e2e.test_send_path import message
from tests.support.postgres import DSN
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]
BIG = message(subject="Big") + (b"0123456789" * 7 + b"\r\n") * 280_000  # ~20 MB: 20 pieces


def pieces(proc: SendguardProcess) -> int:
    """How many pieces of contents the server's store holds."""
    store = proc.config.get("store", {})
    if "schema" not in store:
        with sqlite3.connect(f"file:{proc.db_path}?mode=ro", uri=True, timeout=5) as conn:
            try:
                return int(conn.execute("SELECT COUNT(*) FROM content_chunks").fetchone()[0])
            except sqlite3.OperationalError:  # not created yet
                return 0

    async def count() -> int:
        conn = await asyncpg.connect(DSN, server_settings={"search_path": store["schema"]})
        try:
            return int(await conn.fetchval("SELECT COUNT(*) FROM content_chunks"))
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    return asyncio.run(count())


def test_kill_9_while_a_large_message_is_written_loses_nothing_and_shows_no_half(
    sendguard: Start, sink: Sink
) -> None:
    sink.handler.delay = 0.5  # the small ones are still queued or being sent at the kill
    # A delivery the killed process had claimed is released when the server starts again (its
    # owner is gone), on both backends, so the default 5-minute lease is not waited for.
    proc = sendguard()
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=30) as smtp:
        for number in range(5):
            smtp.sendmail("shop@example.com", [f"small{number}@example.org"], message())
    answers: list[object] = []

    def send_big() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=300) as smtp:
                answers.append(smtp.sendmail("shop@example.com", ["big@example.org"], BIG))
        except (OSError, smtplib.SMTPException) as exc:
            answers.append(exc)

    sender = threading.Thread(target=send_big)
    sender.start()
    deadline = time.monotonic() + 120
    while not 0 < (written := pieces(proc)) < 15:
        assert time.monotonic() < deadline, f"no piece written in time ({written})"
        assert not answers, f"answered before a piece was seen: {answers}"
        time.sleep(0.005)
    proc.kill9()
    sender.join(60)
    # Never answered 250: the client saw the connection go.
    assert len(answers) == 1
    assert isinstance(answers[0], OSError | smtplib.SMTPException)

    sink.handler.delay = 0
    proc.start()
    # What was answered 250 before arrives (a send in flight at the kill may arrive twice).
    sink.wait_for(5, timeout=60)
    got = {r.rcpt_tos[0] for r in sink.received}
    assert got == {f"small{number}@example.org" for number in range(5)}
    # The half-written message is nowhere: no delivery of it, and its pieces are gone.
    assert not [d for d in proc.deliveries() if d["recipient"] == "big@example.org"]
    assert pieces(proc) == 0
    # And the server takes a large message again.
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=300) as smtp:
        assert smtp.sendmail("shop@example.com", ["big@example.org"], BIG) == {}
    assert pieces(proc) == -(-len(BIG) // CHUNK)  # its Received line does not make another
