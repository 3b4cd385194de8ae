"""The what-if replay on a week of traffic recorded through the real store and engine."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sendguard.app import build_policies
from sendguard.config import parse_config
from sendguard.engine import Engine
from sendguard.events import Event, EventType
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.simulate import Report, simulate
from sendguard.simulate.render import html, text
from sendguard.simulate.source import read_jsonl, read_mbox, read_store
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Action

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PERMISSIVE = "policies: []\n"
CAP = """
policies:
  - plugin: frequency
    options:
      caps: [{scope: recipient, limit: 2, window: 7d}]
"""
SUNSET = """
policies:
  - plugin: human_hold
    options: {hold_unapproved_campaigns: false, patterns: ["(?i)spring sale 4"]}
"""

# (day, recipient, subject, class): a week of traffic
WEEK = [
    (0, "ann@example.org", "Spring sale 1", "marketing"),
    (0, "bob@example.org", "Spring sale 1", "marketing"),
    (0, "carol@example.org", "Spring sale 1", "marketing"),
    (1, "ann@example.org", "Spring sale 2", "marketing"),
    (1, "carol@example.org", "Spring sale 2", "marketing"),
    (2, "ann@example.org", "Spring sale 3", "marketing"),
    (3, "ann@example.org", "Spring sale 4", "marketing"),
    (4, "bob@example.org", "Spring sale 4", "marketing"),
    (5, "ann@example.org", "Spring sale 5", "marketing"),
    (6, "carol@example.org", "Spring sale 6", "marketing"),
    (6, "ann@example.org", "Your receipt", "transactional"),
]
# What a 2-per-7-days cap delays: each marketing mail past the second to one person in the week.
DELAYED_BY_CAP = {
    ("ann@example.org", "Spring sale 3"),
    ("ann@example.org", "Spring sale 4"),
    ("ann@example.org", "Spring sale 5"),
    ("carol@example.org", "Spring sale 6"),
}


def content(recipient: str, subject: str, kind: str) -> bytes:
    return (
        f"From: shop@example.com\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"X-Sendguard-Campaign: spring\r\nX-Sendguard-Class: {kind}\r\n\r\nHello\r\n"
    ).encode()


async def record_week(path: Path) -> None:
    """Send the week through the real Intake and Engine under the permissive config."""
    settings = parse_config(PERMISSIVE, "test")
    clock = FakeClock(START)
    store = SQLiteStore(path, busy_timeout=timedelta(seconds=5))
    await store.open()
    metrics = Metrics()
    engine = Engine(build_policies(settings), store, clock, metrics)
    intake = Intake(
        engine, store, clock, metrics, settings.config.headers.sources(), lambda: None, "test"
    )
    try:
        for day, recipient, subject, kind in WEEK:
            clock.set(START + timedelta(days=day, minutes=len(subject)))
            accepted = await intake.accept(
                content(recipient, subject, kind), "shop@example.com", [recipient], "http"
            )
            if subject == "Spring sale 4" and recipient == "ann@example.org":
                await store.add_event(
                    Event(
                        EventType.CLICK,
                        recipient,
                        clock.now() + timedelta(hours=2),
                        accepted.message.id,
                    )
                )
    finally:
        await store.close()


async def replay_store(path: Path, candidate: str) -> Report:
    store = SQLiteStore(path, busy_timeout=timedelta(seconds=5))
    await store.open()
    try:
        since, until = START - timedelta(days=1), START + timedelta(days=8)
        items = await read_store(store, since, until)
    finally:
        await store.close()
    return await simulate(parse_config(candidate, "candidate"), items, since, until)


async def test_a_cap_of_two_a_week_reports_exactly_the_deliveries_it_would_delay(
    tmp_path: Path,
) -> None:
    await record_week(tmp_path / "history.db")
    report = await replay_store(tmp_path / "history.db", CAP)
    assert len(report.replayed) == len(WEEK)
    assert {(r.recipient, r.subject) for r in report.changed} == DELAYED_BY_CAP
    assert all(r.then is Action.FORWARD and r.would is Action.DELAY for r in report.changed)
    assert all(r.policy == "frequency" for r in report.changed)
    ann3 = next(r for r in report.changed if r.subject == "Spring sale 3")
    # Ann's first two mails went out on 11-02 and 11-03: the third waits for the window.
    assert ann3.until is not None and ann3.until.date() == (START + timedelta(days=7)).date()
    data = report.to_json()
    assert data["changed"] == 4
    assert data["policies"] == [
        {
            "policy": "frequency",
            "verdict": "delay",
            "count": 4,
            "examples": data["policies"][0]["examples"],
        }
    ]
    summary = data["policies"][0]["examples"][0]["summary"]
    assert summary.startswith("ann@example.org: *Spring sale 3* 2026-11-04 — forwarded then, ")
    assert "would be delayed to 11-09 by frequency" in summary
    assert data["recipients"] == [
        {"recipient": "ann@example.org", "count": 3},
        {"recipient": "carol@example.org", "count": 1},
    ]
    assert data["campaigns"] == [{"campaign": "spring", "count": 4}]
    assert data["dropped_but_engaged"] == []  # a delay drops nothing
    assert "ann@example.org (3)" in text(report)


async def test_a_drop_of_mail_that_was_clicked_is_reported_as_its_cost(tmp_path: Path) -> None:
    await record_week(tmp_path / "history.db")
    drop = CAP.replace("window: 7d}]", "window: 7d}]\n      max_delay: 12h")
    report = await replay_store(tmp_path / "history.db", drop)
    # Past max_delay the cap drops instead of delaying; Ann clicked her "Spring sale 4".
    assert {(r.recipient, r.subject) for r in report.changed} == DELAYED_BY_CAP
    assert {r.would for r in report.changed} == {Action.DROP}
    lost = report.to_json()["dropped_but_engaged"]
    assert [(e["recipient"], e["subject"]) for e in lost] == [("ann@example.org", "Spring sale 4")]
    assert "would have been dropped, but was opened or clicked" in text(report)


async def test_the_html_report_is_one_escaped_page(tmp_path: Path) -> None:
    await record_week(tmp_path / "history.db")
    report = await replay_store(tmp_path / "history.db", CAP)
    page = html(report)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "http" not in page.split("</title>")[1]
    assert page.count("ann@example.org: *Spring sale") >= 3
    assert "—" in page


async def test_a_jsonl_export_replays_with_everything_forwarded_then(tmp_path: Path) -> None:
    lines = [
        {
            "from": "shop@example.com",
            "to": [recipient],
            "headers": {"Subject": subject, "X-Campaign": "spring", "X-Sendguard-Class": kind},
            "at": (START + timedelta(days=day, minutes=len(subject))).isoformat(),
            "id": f"m{n}",
        }
        for n, (day, recipient, subject, kind) in enumerate(WEEK)
    ]
    lines.append(
        {
            "event": "open",
            "recipient": "ann@example.org",
            "message": "m5",
            "at": (START + timedelta(days=3)).isoformat(),
        }
    )
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    items = read_jsonl(path)
    report = await simulate(parse_config(CAP, "candidate"), items)
    assert {(r.recipient, r.subject) for r in report.changed} == DELAYED_BY_CAP
    assert {r.campaign for r in report.changed} == {"spring"}  # from X-Campaign, as configured
    opened = next(r for r in report.replayed if r.source_id == "m5")
    assert opened.engaged and opened.subject == "Spring sale 3"


async def test_an_mbox_replays_at_its_date_headers(tmp_path: Path) -> None:
    path = tmp_path / "sent.mbox"
    parts = []
    for day, recipient, subject, kind in WEEK:
        at = START + timedelta(days=day, minutes=len(subject))
        parts.append(
            f"From shop@example.com {at:%a %b %d %H:%M:%S %Y}\n"
            + content(recipient, subject, kind)
            .decode()
            .replace("\r\n\r\n", f"\r\nDate: {email.utils.format_datetime(at)}\r\n\r\n", 1)
            .replace("\r\n", "\n")
            + "\n"
        )
    path.write_text("".join(parts))
    items = read_mbox(path)
    assert len(items) == len(WEEK)
    report = await simulate(parse_config(CAP, "candidate"), items)
    assert {(r.recipient, r.subject) for r in report.changed} == DELAYED_BY_CAP
