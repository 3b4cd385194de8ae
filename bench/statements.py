"""SQL statements per single-recipient message, end to end, counted with SQLite's trace callback.

    .venv/bin/python -m bench.statements SINK_PORT [CLIENTS] [PER_CLIENT] [--postgres] [--campaign]

sendguard's SMTP ingress, the intake with the six built-in policies of the embedded default
config, the SQLite store and the dispatcher run in this process, wired as `serve` wires them,
and forward to an SMTP sink on `SINK_PORT`. `CLIENTS` concurrent SMTP clients send `PER_CLIENT`
messages each, one per connection (as `smtp-source` sends them), each to another person; every
statement any connection of the store runs meanwhile (reads, writes, BEGIN/COMMIT) is counted.
No clock is involved: the count is the measure. `make bench` (bench/run.py) and
tests/e2e/test_statement_budget.py both count this way.

With `--postgres` the store is PostgreSQL instead (a fresh schema on the server
`SENDGUARD_TEST_PG` names, dropped after): every statement its pooled connections send is
counted (asyncpg's query logger), transaction control, advisory locks and asyncpg's reset of a
connection going back to the pool included. Each is a round trip to the server, and one more
when a connection prepares a statement it has not seen yet.

With `--campaign` every message is of an approved campaign, as `make bench`'s newsletter
(`bench/pg_cpu.py`'s traffic): human_hold reads the campaign and its approvals, and counts no
blast.

A message's own statements (its inserts, the reads of its decision, its `sent`) do not depend
on timing; those shared by a batch of messages (BEGIN and COMMIT of a group commit, a claim and
its transitions, the dispatcher's look at the next due time) depend on how many messages share
one. Both are reported.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import sqlite3
import sys
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import asyncpg

from sendguard.app import build_one_upstream, build_policies
from sendguard.approvals import Approval, Campaign, ContentApproval
from sendguard.clock import SystemClock
from sendguard.config import UpstreamOptions, load_config, parse_config
from sendguard.content import fingerprints
from sendguard.delivery.dispatcher import Dispatcher
from sendguard.engine import Engine
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.store.base import Store
from sendguard.store.postgres import PostgresStore, scratch_dsn
from sendguard.store.sqlite import SQLiteStore

TARGET = 12
"""Issue 11's budget of statements per single-recipient message, in all."""
# What a batch of messages shares (matched on the statement's start).
SHARED = (
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "UPDATE deliveries SET owner",  # a claim
    "WITH taken AS (UPDATE deliveries SET owner",  # a claim with its `sending`s (PostgreSQL)
    "INSERT INTO transitions (delivery_id, seq, at, state, reason) SELECT",  # its `sending`s
    "SELECT id, received_at",  # messages a claim had not in memory
    "SELECT MIN(due_at)",  # the dispatcher's next wake-up
)


TRIGGERED = "UPDATE deliveries SET"
"""Statements that run schema 17's `history_sent` trigger (an update of a delivery's state).
SQLite reports each trigger program a statement runs (its WHEN evaluated, then its body) to
the trace callback, and Python 3.11's `sqlite3` passes on the statement's own text for each:
one UPDATE of a row traced two or three times. A trigger is no statement the client runs (no
call, no prepare, no step of its own), so a repeat of the text just traced on the same thread
is not counted again."""


@dataclass
class Statements:
    """What the store's connections ran while `counting` was on (called from any thread)."""

    counting: bool = False
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: threading.local = field(default_factory=threading.local)
    """The text traced last on each thread (one connection's), to know a trigger's repeat."""

    def __call__(self, sql: str) -> None:
        if self.counting:
            repeat = sql == getattr(self.last, "sql", None) and sql.startswith(TRIGGERED)
            self.last.sql = sql
            if repeat:
                return
            with self.lock:
                self.seen.append(sql)

    def shared(self) -> list[str]:
        return [sql for sql in self.seen if " ".join(sql.split()).startswith(SHARED)]

    def summary(self) -> str:
        kinds = Counter(" ".join(sql.split()[:4])[:60] for sql in self.seen)
        return "\n".join(f"{n:5} {kind}" for kind, n in kinds.most_common())


@dataclass
class Relay:
    smtp_port: int
    statements: Statements
    sent: Callable[[], Awaitable[int]]
    """How many deliveries are `sent`, read on a connection of its own (not counted)."""


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sink_upstream(sink_port: int) -> UpstreamOptions:
    """The upstream options of a config that relays to the sink."""
    text = f"upstream: {{kind: smtp, host: 127.0.0.1, port: {sink_port}, starttls: never}}\n"
    return parse_config(text, "budget.yaml").config.upstream


@asynccontextmanager
async def relay(
    folder: Path,
    sink_port: int,
    *,
    postgres: bool = False,
    prepare: Callable[[Store], Awaitable[None]] | None = None,
) -> AsyncIterator[Relay]:
    """sendguard's SMTP ingress, engine, store and dispatcher, wired as `serve` wires them,
    with the embedded default config (all six built-in policies), its store traced: SQLite
    in `folder`, or with `postgres` a fresh schema of the scratch PostgreSQL server."""
    if postgres:
        dsn, schema = scratch_dsn(os.environ), f"t_stmts_{uuid.uuid4().hex[:12]}"
        statements = Statements()
        try:
            async with _relay(
                PostgresStore(dsn, schema=schema, trace=statements),
                statements,
                lambda: _pg_sent(dsn, schema),
                sink_port,
                prepare,
            ) as running:
                yield running
        finally:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
        return
    statements = Statements()
    db = folder / "sendguard.db"

    async def sent() -> int:
        return sent_count(db)

    async with _relay(
        SQLiteStore(db, trace=statements), statements, sent, sink_port, prepare
    ) as running:
        yield running


async def _pg_sent(dsn: str, schema: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval(
            f"SELECT COUNT(*) FROM \"{schema}\".deliveries WHERE state = 'sent'"  # noqa: S608
        )
        return int(found)
    finally:
        await conn.close()


@asynccontextmanager
async def _relay(
    store: Store,
    statements: Statements,
    sent: Callable[[], Awaitable[int]],
    sink_port: int,
    prepare: Callable[[Store], Awaitable[None]] | None = None,
) -> AsyncIterator[Relay]:
    settings = load_config(None)
    port = free_port()
    config = settings.config.model_copy(
        update={
            "smtp": settings.config.smtp.model_copy(update={"listen": f"127.0.0.1:{port}"}),
            # Idle polls are no message's cost: only the wake-ups a message causes claim.
            "delivery": settings.config.delivery.model_copy(
                update={"poll_interval": settings.config.delivery.lease}
            ),
        }
    )
    clock, metrics = SystemClock(), Metrics()
    await store.open()
    if prepare is not None:
        await prepare(store)
    upstream = build_one_upstream(sink_upstream(sink_port))
    # The count does not depend on time, but a policy over its budget (0.5 s, which a loaded
    # machine running the test suite can take) holds its message and the run never finishes.
    policies = [replace(p, budget=timedelta(seconds=60)) for p in build_policies(settings)]
    engine = Engine(policies, store, clock, metrics)
    dispatcher = Dispatcher(
        store, engine, upstream, clock, config.delivery, metrics, "budget", review=config.review
    )
    store.subscribe(dispatcher.wake)
    dispatching = asyncio.create_task(dispatcher.run())
    intake = Intake(
        engine,
        store,
        clock,
        metrics,
        config.headers.sources(),
        dispatcher.wake,
        "budget.test",
        claimer=dispatcher,
        resend_window=config.smtp.resend_window,
    )
    smtp = SmtpIngress(SmtpHandler(intake, config.smtp, metrics), config.smtp)
    await smtp.start()
    try:
        yield Relay(port, statements, sent)
    finally:
        await smtp.stop(5)
        await dispatcher.stop()
        await dispatching
        await upstream.close()
        await store.close()


CAMPAIGN = "bench"
"""The campaign of `--campaign`'s messages (`make bench`'s traffic: an approved newsletter)."""


def message(subject: str, campaign: str | None = None) -> bytes:
    """A small message (as tests/e2e/test_send_path.py's); each subject is other content.
    With `campaign`, of that campaign, and one content whatever the subject."""
    headers = [
        "From: shop@example.com",
        "To: list@example.net",
        f"Subject: {'newsletter' if campaign else subject}",
        "Message-ID: <m1@example.com>",
    ]
    if campaign:
        headers.append(f"X-Sendguard-Campaign: {campaign}")
    return ("\r\n".join(headers) + "\r\n\r\nHi there,\r\nthe body.\r\n").encode()


async def approve(store: Store) -> None:
    """`CAMPAIGN` approved, with the content of `message(..., CAMPAIGN)` (as `make bench`
    approves its campaign before it measures)."""
    now = SystemClock().now()
    await store.set_campaign(Campaign(CAMPAIGN, Approval.APPROVED, False, now, "bench"))
    content = fingerprints(message("", CAMPAIGN))
    await store.add_approvals(
        [ContentApproval(CAMPAIGN, content.text, "bench", now, content.links)]
    )


def sent_count(db: Path) -> int:
    """Deliveries marked sent, read on a connection of its own (not counted)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'").fetchone()
        return int(n)


def smtp_send(port: int, rcpt: str, subject: str, campaign: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.sendmail("shop@example.com", [rcpt], message(subject, campaign))


async def wait_sent(relay: Relay, count: int) -> None:
    for _ in range(2000):
        if await relay.sent() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{await relay.sent()} of {count} deliveries were sent")


@dataclass(frozen=True)
class Counted:
    messages: int
    own: float
    """A message's own statements, per message."""
    shared: float
    """Statements a batch shares, per message."""
    summary: str

    @property
    def total(self) -> float:
        return self.own + self.shared

    def __str__(self) -> str:
        return (
            f"{self.own:.2f} own + {self.shared:.2f} shared = {self.total:.2f} statements per"
            f" message (target {TARGET} in all)"
        )


async def count(
    relay: Relay, clients: int, per_client: int, campaign: str | None = None
) -> Counted:
    """Send `clients` x `per_client` messages through `relay` and count their statements
    (with `campaign`, of that campaign: `approve` it first)."""
    # A first message warms up what is read once per process.
    await asyncio.to_thread(smtp_send, relay.smtp_port, "first@example.org", "warm-up", campaign)
    await wait_sent(relay, 1)

    def client(n: int) -> None:
        # One message per connection, as `smtp-source` sends them; each to another person
        # (mixed case: the store folds it), so no cap delays any.
        for i in range(per_client):
            smtp_send(relay.smtp_port, f"Person.{n}.{i}@Example.ORG", f"n{n}-{i}", campaign)

    relay.statements.counting = True
    await asyncio.gather(*(asyncio.to_thread(client, n) for n in range(clients)))
    await wait_sent(relay, clients * per_client + 1)
    relay.statements.counting = False
    messages = clients * per_client
    shared = len(relay.statements.shared()) / messages
    own = len(relay.statements.seen) / messages - shared
    return Counted(messages, own, shared, relay.statements.summary())


async def measure(
    sink_port: int,
    clients: int = 20,
    per_client: int = 10,
    *,
    postgres: bool = False,
    campaign: bool = False,
) -> Counted:
    with tempfile.TemporaryDirectory(prefix="sendguard-statements-") as folder:
        async with relay(
            Path(folder), sink_port, postgres=postgres, prepare=approve if campaign else None
        ) as running:
            return await count(running, clients, per_client, CAMPAIGN if campaign else None)


def main() -> int:
    postgres = "--postgres" in sys.argv
    campaign = "--campaign" in sys.argv
    argv = [a for a in sys.argv if a not in ("--postgres", "--campaign")]
    sink_port = int(argv[1])
    clients = int(argv[2]) if len(argv) > 2 else 20
    per_client = int(argv[3]) if len(argv) > 3 else 10
    counted = asyncio.run(
        measure(sink_port, clients, per_client, postgres=postgres, campaign=campaign)
    )
    print(counted.summary)
    print(counted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
