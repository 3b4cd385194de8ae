"""Schema 8 keeps a decision's outcomes as JSON on its transition: a database written before
still shows every outcome it recorded, and `sent` of its history, exactly as before."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sendguard.clock import to_micros
from sendguard.deliveries import Change
from sendguard.message import DeliveryState
from sendguard.review_queue import HeldQuery
from sendguard.store.sqlite import SQLiteStore
from sendguard.verdict import Action, Decision, Mode, PolicyOutcome, Verdict
from tests.support.sqlite_versions import sqlite_at_version

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def old_database(path: Path) -> None:
    """A schema 7 database as the previous release wrote it: one outcome row per policy."""
    sqlite_at_version(path, 7)
    conn = sqlite3.connect(path, isolation_level=None)
    at, later = to_micros(T0), to_micros(T1)
    fields = json.dumps({"campaign": "spring", "class": "marketing"})
    conn.execute(
        "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers, fields,"
        " campaign, class, size, content_hash, content) VALUES"
        " ('m1', ?, 'smtp', 'shop@example.com', '[\"ann@example.org\", \"bo@example.org\"]',"
        " '[]', ?, 'spring', 'marketing', 3, 'h1', x'4869')",
        (at, fields),
    )
    for delivery, state in (("d1", "sent"), ("d2", "held")):
        conn.execute(
            "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, campaign,"
            " state, created_at, updated_at, hold_origin) VALUES (?, 'm1', ?, ?, 'example.org',"
            " 'spring', ?, ?, ?, ?)",
            (
                delivery,
                f"{delivery}@example.org",
                f"{delivery}@example.org",
                state,
                at,
                later,
                "policy" if state == "held" else None,
            ),
        )
    conn.executemany(
        "INSERT INTO transitions (delivery_id, seq, at, state, reason) VALUES (?, ?, ?, ?, ?)",
        [
            ("d1", 1, at, "queued", "frequency: within every cap"),
            ("d1", 2, later, "sending", "attempt 1"),
            ("d1", 3, later, "sent", "upstream accepted"),
            ("d2", 1, at, "held", "human_hold: campaign spring is not approved yet"),
        ],
    )
    conn.executemany(
        "INSERT INTO outcomes (delivery_id, seq, at, policy, action, mode, reason, until, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("d1", 1, at, "frequency", "forward", "enforce", "within every cap", None, None),
            ("d1", 2, at, "fatigue", "delay", "shadow", "throttled", later, None),
            ("d2", 1, at, "frequency", "forward", "enforce", "within every cap", None, None),
            ("d2", 2, at, "human_hold", "hold", "enforce", "not approved yet", None, None),
        ],
    )
    conn.executemany(
        "INSERT INTO history (delivery_id, recipient_key, domain, campaign, class, content_hash,"
        " at, sent) VALUES (?, ?, 'example.org', 'spring', 'marketing', 'h1', ?, ?)",
        [("d1", "d1@example.org", at, 1), ("gone", "d1@example.org", at - 10, 1)],
    )
    conn.close()


async def test_outcomes_recorded_before_schema_8_read_as_before(tmp_path: Path) -> None:
    path = tmp_path / "sendguard.db"
    old_database(path)
    store = SQLiteStore(path)
    await store.open()
    try:
        got = [
            (r.at, r.outcome.policy, r.outcome.verdict.action) for r in await store.outcomes("d1")
        ]
        assert got == [(T0, "frequency", Action.FORWARD), (T0, "fatigue", Action.DELAY)]
        (shadow,) = [r.outcome for r in await store.outcomes("d1") if r.outcome.mode is Mode.SHADOW]
        assert shadow.verdict.until == T1
        records = await store.delivery_records(["d1", "d2"])
        assert [t.state for t in records["d1"].transitions] == [
            DeliveryState.QUEUED,
            DeliveryState.SENDING,
            DeliveryState.SENT,
        ]
        assert [r.outcome.policy for r in records["d2"].outcomes] == ["frequency", "human_hold"]
        held = await store.held_queue(HeldQuery(policy="human_hold"))
        assert [d.id for d in held.deliveries] == ["d2"]
        history = await store.history("d1@example.org", T0 - timedelta(days=1))
        assert [(h.delivery_id, h.sent) for h in history] == [("gone", True), ("d1", True)]

        # A new decision on the old delivery: its outcomes are kept on its transition.
        decision = Decision.of(
            [
                PolicyOutcome("frequency", Verdict.forward("within every cap")),
                PolicyOutcome("human_hold", Verdict.hold("still not approved")),
            ]
        )
        await store.change(
            "d2",
            Change(DeliveryState.HELD, "human_hold: still not approved", T1, decision=decision),
        )
        after = [
            (r.at, r.outcome.policy, r.outcome.verdict.reason) for r in await store.outcomes("d2")
        ]
        assert after == [
            (T0, "frequency", "within every cap"),
            (T0, "human_hold", "not approved yet"),
            (T1, "frequency", "within every cap"),
            (T1, "human_hold", "still not approved"),
        ]
        assert [
            d.id for d in (await store.held_queue(HeldQuery(policy="human_hold"))).deliveries
        ] == ["d2"]
    finally:
        await store.close()
