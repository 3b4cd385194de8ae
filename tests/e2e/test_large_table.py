"""The aggregate test: SMTP stays prompt while aggregates run over 10^6 deliveries.

`GET /v1/campaigns` and the state gauge of `GET /metrics` count every delivery. Run on the
event loop's thread they stalled every SMTP session and HTTP request for as long (seconds,
at this size). The table is built directly in SQLite before the server starts (a recursive
CTE, indexes dropped and rebuilt around it), so the test takes seconds, not minutes.
"""

from __future__ import annotations

import datetime
import json
import smtplib
import sqlite3
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sendguard.clock import to_micros
from sendguard.store.sqlite_schema import migrate
from tests.e2e.test_send_path import Start, message, send
from tests.support.process import TOKEN, SendguardProcess

pytestmark = [pytest.mark.e2e, pytest.mark.large_table]
DELIVERIES = 1_000_000
CAMPAIGNS = 20


def build_large_table(path: Path) -> None:
    """A migrated database with DELIVERIES finished deliveries of one message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    now = to_micros(datetime.datetime.now(datetime.UTC))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn)
        conn.execute("PRAGMA journal_mode = OFF")  # a scratch build: no journal, no fsync
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -200000")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'deliveries' AND sql IS NOT NULL"
        ).fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:  # rebuilding an index once is far cheaper than growing it
            conn.execute(f"DROP INDEX {name}")
        conn.execute(
            "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers,"
            " fields, campaign, class, size, content_hash, content) VALUES ('0bulk', ?,"
            " 'smtp', 'shop@example.com', '[]', '[]', '{}', NULL, 'marketing', 1, NULL, x'')",
            (now,),
        )
        # finished and recent: nothing to claim, nothing the hourly prune removes
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain,"
            " campaign, state, created_at, updated_at)"
            " SELECT printf('0bulk%021d', i), '0bulk', printf('r%07d@x.org', i),"
            " printf('r%07d@x.org', i), 'x.org', 'bulk-' || (i % ?),"
            " CASE i % 3 WHEN 0 THEN 'sent' WHEN 1 THEN 'dropped' ELSE 'failed' END, ?, ?"
            " FROM n",
            (DELIVERIES, CAMPAIGNS, now, now),
        )
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


class Hammer(threading.Thread):
    """GETs `path` back to back until stopped; keeps each answer's status and duration."""

    def __init__(self, proc: SendguardProcess, path: str) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{proc.http_port}{path}"
        self.stopping = threading.Event()
        self.answers: list[tuple[int, float, bytes]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {TOKEN}"})
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
            self.answers.append((response.status, time.monotonic() - started, body))


def smtp_transaction(proc: SendguardProcess, n: int) -> float:
    """Seconds from connecting to the 250 after DATA."""
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=60) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        client.rcpt(f"prompt{n}@example.org")
        code, reply = client.data(message(subject=f"prompt {n}"))
    assert code == 250, reply
    return time.monotonic() - started


def test_smtp_is_answered_promptly_while_aggregates_run_over_a_million_deliveries(
    sendguard: Start, tmp_path: Path
) -> None:
    build_large_table(tmp_path / "var" / "sendguard.db")
    proc = sendguard()
    send(proc, ["warm@example.org"], message())  # after start-up work (recovery, prune)

    hammers = [Hammer(proc, "/v1/campaigns"), Hammer(proc, "/metrics")]
    for hammer in hammers:
        hammer.start()
    try:
        deadline = time.monotonic() + 60
        while not all(h.answers for h in hammers) and time.monotonic() < deadline:
            time.sleep(0.05)  # both kinds of aggregate have been served at least once
        smtp = [smtp_transaction(proc, n) for n in range(5)]
    finally:
        for hammer in hammers:
            hammer.stopping.set()
        for hammer in hammers:
            hammer.join(120)

    campaigns, metrics = hammers[0].answers, hammers[1].answers
    assert all(status == 200 for status, _, _ in campaigns + metrics)
    counted = json.loads(campaigns[-1][2])["campaigns"]
    assert sum(sum(c["counts"].values()) for c in counted) == DELIVERIES
    assert b'sendguard_deliveries_in_state{state="sent"}' in metrics[-1][2]
    aggregate = statistics.median(duration for _, duration, _ in campaigns)
    # Inline on the loop, every transaction waited for the campaign counts (seconds each);
    # off the loop it is answered in a commit's time, a small part of one count. The median:
    # on the 2-core CI machine one transaction in five can lose the CPU to the other pytest
    # worker for a second (session 11's clean-clone run: 1.25 s once, then 14-31 ms, against
    # 2 s a count), which says nothing of the loop.
    assert statistics.median(smtp) < max(0.5, aggregate / 4), (smtp, aggregate)
