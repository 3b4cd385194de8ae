"""How long the review page's queue takes with 10,000 held deliveries in 500 campaigns.

Usage: python bench/review_queue.py [DIR] — runs on its own (no Postfix, no wrk). Fills a fresh
SQLite store in DIR (a temporary directory by default) with 10,000 held deliveries of 500
campaigns (20 per message, each with its transitions and six policy outcomes, the human hold
holding it) beside 50,000 finished ones, starts `sendguard serve` on it, signs in as a
reviewer and times `GET /review` (the first page, a later page, the policy and recipient
filters) over HTTP, as a browser would. The issue's target: under 300 ms. Prints one line per
view (median and slowest of the runs) and a JSON summary on the last line.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from sendguard.clock import to_micros
from sendguard.ids import new_id
from sendguard.password import hash_password
from sendguard.store.sqlite import SQLiteStore

HELD = 10_000
CAMPAIGNS = 500
FINISHED = 50_000
PER_MESSAGE = 20
RUNS = 15
TARGET_MS = 300.0
NOW = datetime.now(UTC)
POLICIES = ("schedule", "context", "frequency", "repetition", "fatigue")


def fill(db: Path) -> None:
    asyncio.run(_migrate(db))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    messages, deliveries, transitions, outcomes = [], [], [], []
    total = HELD + FINISHED
    for i in range(0, total, PER_MESSAGE):
        held = i < HELD
        campaign = f"campaign-{(i // PER_MESSAGE) % CAMPAIGNS:03d}" if held else "newsletter"
        at = to_micros(NOW - timedelta(hours=1 + (i % 48)))
        message_id = new_id()
        fields = json.dumps({"campaign": campaign, "class": "marketing", "requires": []})
        headers = json.dumps([["Subject", f"Offer {i // PER_MESSAGE}"], ["From", "s@shop.example"]])
        recipients = [f"person{i + n}@example.org" for n in range(PER_MESSAGE)]
        messages.append(
            (
                message_id,
                at,
                "bench",
                "s@shop.example",
                json.dumps(recipients),
                headers,
                fields,
                campaign,
                "marketing",
                100,
                None,
                b"Subject: x\r\n\r\nbody\r\n",
            )
        )
        for recipient in recipients:
            delivery_id = new_id()
            state = "held" if held else "sent"
            due = at + to_micros(NOW + timedelta(days=7)) - to_micros(NOW) if held else None
            deliveries.append(
                (
                    delivery_id,
                    message_id,
                    recipient,
                    recipient,
                    "example.org",
                    campaign,
                    state,
                    at,
                    at,
                    due,
                    "policy" if held else None,
                )
            )
            why = f"human_hold: campaign {campaign} is not approved yet" if held else "sent"
            transitions.append((delivery_id, 1, at, state, why))
            for seq, policy in enumerate(POLICIES, 1):
                outcomes.append((delivery_id, seq, at, policy, "forward", "enforce", "ok"))
            verdict = "hold" if held else "forward"
            outcomes.append(
                (
                    delivery_id,
                    len(POLICIES) + 1,
                    at,
                    "human_hold",
                    verdict,
                    "enforce",
                    f"campaign {campaign} is not approved yet" if held else "approved",
                )
            )
    conn.executemany(
        "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
        " campaign, class, size, content_hash, content) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        messages,
    )
    conn.executemany(
        "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, campaign,"
        " state, created_at, updated_at, due_at, hold_origin) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        deliveries,
    )
    conn.executemany(
        "INSERT INTO transitions (delivery_id, seq, at, state, reason) VALUES (?,?,?,?,?)",
        transitions,
    )
    conn.executemany(
        "INSERT INTO outcomes (delivery_id, seq, at, policy, action, mode, reason)"
        " VALUES (?,?,?,?,?,?,?)",
        outcomes,
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def _migrate(db: Path) -> None:
    store = SQLiteStore(db, busy_timeout=timedelta(seconds=5))
    await store.open()
    await store.close()


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    # the benchmark's own loopback server, http only
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        return opener.open(request, timeout=30)
    except urllib.error.HTTPError as err:
        return err


def sign_in(base: str) -> str:
    with _request(base + "/review/login") as resp:
        page = resp.read().decode()
        cookie = resp.headers["Set-Cookie"].split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = urllib.parse.urlencode(
        {"username": "bench", "password": "bench-password", "csrf_token": token.group(1)}
    ).encode()
    resp = _request(
        base + "/review/login",
        form,
        {"Origin": base, "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )
    session = next(c for c in resp.headers.get_all("Set-Cookie") if "sendguard_session=" in c)
    return str(session.split(";")[0])


def timed(base: str, path: str, cookie: str) -> tuple[float, float, str]:
    times, page = [], ""
    for _ in range(RUNS):
        began = time.perf_counter()
        with _request(base + path, headers={"Cookie": cookie}) as resp:
            page = resp.read().decode()
            assert resp.status == 200, resp.status
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times), page


def main(workdir: Path) -> dict[str, Any]:
    db = workdir / "bench.db"
    began = time.perf_counter()
    fill(db)
    print(f"filled {HELD} held + {FINISHED} sent deliveries in {time.perf_counter() - began:.1f}s")
    port = _free_port()
    config = {
        "smtp": {"listen": f"127.0.0.1:{_free_port()}"},
        "http": {"listen": f"127.0.0.1:{port}", "api_tokens": ["bench-token"]},
        "store": {"url": f"sqlite:///{db}"},
        "upstream": {"kind": "outbox", "path": str(workdir / "outbox")},
        "policies": [{"plugin": "human_hold"}],
        "review": {"users": {"bench": {"password_hash": hash_password("bench-password")}}},
        "log": {"format": "json", "level": "warning"},
    }
    (workdir / "sendguard.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendguard", "serve", "--config", str(workdir / "sendguard.yaml")],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        cookie = sign_in(base)
        views = {
            "first page": "/review",
            "page 100": "/review?page=100",
            "policy filter": "/review?policy=human_hold",
            "recipient filter": "/review?recipient=person4242%40example.org",
        }
        results: dict[str, Any] = {}
        for label, path in views.items():
            median, slowest, _ = timed(base, path, cookie)
            results[label] = {"median_ms": round(median, 1), "max_ms": round(slowest, 1)}
            print(f"{label:18} median {median:7.1f} ms  slowest {slowest:7.1f} ms")
        first = timed(base, "/review", cookie)[2]
        assert f'<span class="count">{HELD}</span>' in first, "the queue does not count them all"
    finally:
        proc.terminate()
        proc.wait(30)
    worst = max(r["median_ms"] for r in results.values())
    summary = {
        "held": HELD,
        "campaigns": CAMPAIGNS,
        "finished": FINISHED,
        "target_ms": TARGET_MS,
        "worst_median_ms": worst,
        "within_target": worst < TARGET_MS,
        "views": results,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
