"""µs per delivery for every built-in policy of the default config, with N prior deliveries.

Usage: python bench/policy_cost.py DB_PATH N — prints the cost on its last line (wall time; the
process CPU time per delivery goes to stderr). The history is
written straight into a fresh SQLite store (N deliveries to N/5 people over 30 days, with their
send history and some engagement), then 2,000 deliveries to people with history are judged.
Judging writes nothing, so a second run with the same DB_PATH and N judges the same 2,000
deliveries against the same store without building it again (the people judged are kept beside
it, in DB_PATH.judged.json): `make bench` runs it three times per N and reports the median.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from sendguard import logs
from sendguard.app import build_policies
from sendguard.clock import to_micros
from sendguard.config import load_config
from sendguard.engine import Engine
from sendguard.headers import Headers
from sendguard.ids import new_id
from sendguard.message import Delivery, DeliveryState, Message, SendguardFields
from sendguard.metrics import Metrics
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
JUDGED = 2000


def fill(path: Path, n: int) -> list[str]:
    people = max(1, n // 5)
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not a secret
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    fields = json.dumps({"campaign": "c0", "class": "marketing", "requires": []})
    conn.execute("BEGIN")
    batch_messages, batch_deliveries, batch_history = [], [], []
    for i in range(n):
        if i % 100 == 0:
            message_id = f"m{i:012d}"
            at = to_micros(NOW - timedelta(days=30) * rng.random())
            batch_messages.append(
                (
                    message_id,
                    at,
                    "bench",
                    "s@example.com",
                    "[]",
                    "[]",
                    fields,
                    f"c{i % 50}",
                    "marketing",
                    10,
                    None,
                    b"x",
                )
            )
        person = f"p{rng.randrange(people)}@example.org"
        when = to_micros(NOW - timedelta(days=30) * rng.random())
        delivery = f"d{i:012d}"
        batch_deliveries.append(
            (delivery, message_id, person, person, "example.org", f"c{i % 50}", "sent", when, when)
        )
        batch_history.append(
            (delivery, person, "example.org", f"c{i % 50}", "marketing", f"h{i % 997}", when, 1)
        )
        if len(batch_deliveries) >= 50_000:
            flush(conn, batch_messages, batch_deliveries, batch_history)
    flush(conn, batch_messages, batch_deliveries, batch_history)
    conn.executemany(
        "INSERT INTO events (type, recipient_key, message_id, at) VALUES (?,?,?,?)",
        [
            (
                "open",
                f"p{rng.randrange(people)}@example.org",
                None,
                to_micros(NOW - timedelta(days=10)),
            )
            for _ in range(max(1, n // 10))
        ],
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return [f"p{rng.randrange(people)}@example.org" for _ in range(JUDGED)]


def flush(conn: sqlite3.Connection, messages: list, deliveries: list, history: list) -> None:  # type: ignore[type-arg]
    conn.executemany(
        "INSERT INTO messages (id, received_at, ingress, mail_from, recipients,"
        " headers, fields, campaign, class, size, content_hash, content)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        messages,
    )
    conn.executemany(
        "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain,"
        " campaign, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        deliveries,
    )
    conn.executemany(
        "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class,"
        " content_hash, at, sent) VALUES (?,?,?,?,?,?,?,?)",
        history,
    )
    messages.clear()
    deliveries.clear()
    history.clear()


def judged_path(path: Path) -> Path:
    return path.with_name(path.name + ".judged.json")


def kept(path: Path, n: int) -> list[str] | None:
    """The people to judge, if a run before built the store at `path` (their file is written
    last, so it says the store is complete); None for a path not used yet."""
    judged = judged_path(path)
    if judged.exists():
        built = json.loads(judged.read_text())
        if built["n"] != n:
            sys.exit(f"{path} holds {built['n']:,} prior deliveries, not {n:,}: give a new DB_PATH")
        return cast("list[str]", built["recipients"])
    if path.exists():
        sys.exit(f"{path} was not completed by this script: remove it or give a new DB_PATH")
    return None


async def build(path: Path, n: int) -> list[str]:
    """The store with `n` prior deliveries, and the people to judge."""
    store = SQLiteStore(path)
    await store.open()  # creates the schema
    await store.close()
    recipients = fill(path, n)
    judged_path(path).write_text(json.dumps({"n": n, "recipients": recipients}))
    return recipients


async def main(path: Path, n: int) -> None:
    logs.configure("info", "json")  # as `serve` logs when not on a terminal (stderr)
    recipients = kept(path, n) or await build(path, n)
    store = SQLiteStore(path)
    await store.open()
    settings = load_config(None)
    engine = Engine(build_policies(settings), store, FakeClock(NOW), Metrics())
    fields = SendguardFields(campaign="c7")
    message = Message(
        new_id(),
        NOW,
        "bench",
        "s@example.com",
        tuple(recipients[:1]),
        Headers((("Subject", "Offer"),)),
        fields,
        100,
        "h1",
    )
    deliveries = [
        Delivery(new_id(), message, r, DeliveryState.QUEUED, NOW, NOW) for r in recipients
    ]
    for delivery in deliveries[:100]:  # warm caches
        await engine.decide(delivery, b"Subject: Offer\r\n\r\nhi\r\n")
    started, cpu = time.perf_counter(), time.process_time()
    for delivery in deliveries:
        await engine.decide(delivery, b"Subject: Offer\r\n\r\nhi\r\n")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await store.close()
    # CPU time too: on a busy machine it says what the policies cost where wall time cannot.
    print(f"cpu {cpu / len(deliveries) * 1e6:.1f} µs per delivery", file=sys.stderr)
    print(f"{elapsed / len(deliveries) * 1e6:.1f}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
