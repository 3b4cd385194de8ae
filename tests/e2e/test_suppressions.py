"""Issue 9, suppressions that never expire: through SMTP and HTTP as a tool would send."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]
FATIGUE = [{"plugin": "fatigue"}]


def wait_for_prune(proc: SendguardProcess, runs: int = 1, timeout: float = 15.0) -> None:
    """Wait until the retention task has run `runs` times since the log began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [e for e in proc.log_events() if e.get("event") == "retention: pruned"]
        if len(done) >= runs:
            return
        time.sleep(0.05)
    raise AssertionError(f"retention never ran\n{proc.log()[-3000:]}")


def test_unsubscribe_100_days_ago_still_dropped_after_a_restart_prunes(
    sendguard: Start, sink: Sink
) -> None:
    # fatigue reads 30 days of events: retention (90d) prunes the event log as before
    proc = sendguard(policies=[{"plugin": "fatigue", "options": {"lookback": "30d"}}])
    long_ago = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    status, _ = proc.call(
        "POST",
        "/v1/events",
        {"type": "unsubscribe", "recipient": "gone@example.org", "at": long_ago},
    )
    assert status == 202
    wait_for_prune(proc)
    proc.stop()
    proc.start()  # retention (90d) prunes at start: the event log no longer has the unsubscribe
    wait_for_prune(proc, runs=2)
    timeline = proc.call("GET", "/v1/recipients/gone@example.org/timeline")[1]
    assert timeline["events"] == []  # the event is gone, the suppression is not
    assert timeline["suppression"]["reason"] == "unsubscribe"

    dropped = send(proc, ["Gone@Example.org"], message())
    proc.wait_states({"Gone@Example.org": "dropped"}, dropped)
    assert "unsubscribe" in proc.transitions("Gone@Example.org")[-1][1]
    send(proc, ["other@example.org"], message())
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["other@example.org"]]


def test_resubscribe_lifts_an_unsubscribe(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=FATIGUE)
    proc.call("POST", "/v1/events", {"type": "unsubscribe", "recipient": "back@example.org"})
    dropped = send(proc, ["back@example.org"], message())
    proc.wait_states({"back@example.org": "dropped"}, dropped)

    status, answer = proc.call(
        "POST", "/v1/events", {"type": "resubscribe", "recipient": "BACK@example.org"}
    )
    assert status == 202, answer
    assert answer["suppression"] == "lifted"
    send(proc, ["back@example.org"], message())
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["back@example.org"]]
    status, audit = proc.call("GET", "/v1/audit")
    lifts = [e for e in audit["entries"] if e["action"] == "lift"]
    assert lifts and lifts[0]["target"] == "suppression:back@example.org"


def test_an_unsubscribe_takes_held_mail_out_of_the_review_queue(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(
        policies=[*FATIGUE, {"plugin": "human_hold"}], delivery={"poll_interval": "30s"}
    )
    rcpts = ["Quit@Example.org", "stay@example.org"]
    held = send(proc, rcpts, message("X-Sendguard-Campaign: winter"))
    assert proc.states(held) == {"Quit@Example.org": "held", "stay@example.org": "held"}
    status, answer = proc.call(
        "POST", "/v1/events", {"type": "unsubscribe", "recipient": "quit@example.org"}
    )
    assert status == 202 and answer["suppression"] == "added" and answer["woken"] == 1
    # judged again at once (the poll interval is 30 s): nobody reviews mail to someone who left
    proc.wait_states({"Quit@Example.org": "dropped", "stay@example.org": "held"}, held)
    assert "is suppressed" in proc.transitions("Quit@Example.org")[-1][1]
    status, answer = proc.call(
        "POST", "/v1/events", {"type": "open", "recipient": "stay@example.org"}
    )
    assert answer["woken"] == 0  # engagement does not churn the review queue
    assert sink.received == []


SENDGRID_EXPORT = (
    "email,created,reason\r\n"
    "Ann@Example.org,1700000000,Unsubscribed\r\n"
    "not-an-address,1700000000,\r\n"
    "bob@example.org,2024-01-02 03:04:05,spam report\r\n"
    "ann@example.org,1700000001,bounce\r\n"
    "carl@example.org,yesterday,\r\n"
)


def test_suppressions_api_add_import_list_lift_audited(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=FATIGUE)
    status, answer = proc.call(
        "POST",
        "/v1/suppressions",
        {"address": "Dan@Example.org", "reviewer": "ana", "note": "asked by phone"},
    )
    assert status == 201 and answer["added"] is True
    assert answer["suppression"]["address"] == "dan@example.org"
    assert answer["suppression"]["reason"] == "manual"
    status, again = proc.call(
        "POST", "/v1/suppressions", {"address": "dan@example.org", "reviewer": "ana"}
    )
    assert status == 200 and again["added"] is False

    status, imported = proc.call(
        "POST",
        "/v1/suppressions?reviewer=ana&source=sendgrid.csv",
        raw=SENDGRID_EXPORT.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 200, imported
    # carl's date is unreadable: he opted out all the same, so he is suppressed as of now
    assert imported["added"] == 3 and imported["already_present"] == 1
    assert [i["line"] for i in imported["invalid"]] == [3]
    assert [w["line"] for w in imported["warnings"]] == [6]
    assert "suppressed as of now" in imported["warnings"][0]["message"]

    status, listed = proc.call("GET", "/v1/suppressions?limit=2")
    assert [s["address"] for s in listed["suppressions"]] == ["ann@example.org", "bob@example.org"]
    assert listed["suppressions"][1]["reason"] == "complaint"
    assert listed["suppressions"][0]["source"] == "import:sendgrid.csv (reviewer ana)"
    assert listed["suppressions"][0]["created_at"] == "2023-11-14T22:13:20Z"
    status, rest = proc.call("GET", f"/v1/suppressions?after={listed['next']}")
    assert [s["address"] for s in rest["suppressions"]] == ["carl@example.org", "dan@example.org"]
    status, by_reason = proc.call("GET", "/v1/suppressions?reason=unsubscribe")
    assert [s["address"] for s in by_reason["suppressions"]] == ["ann@example.org"]

    dropped = send(proc, ["bob@example.org"], message())
    proc.wait_states({"bob@example.org": "dropped"}, dropped)
    status, lifted = proc.call(
        "DELETE", "/v1/suppressions/BOB@example.org", {"reviewer": "ana", "note": "false report"}
    )
    assert status == 200 and lifted["lifted"]["reason"] == "complaint"
    status, missing = proc.call("DELETE", "/v1/suppressions/bob@example.org", {"reviewer": "ana"})
    assert status == 404 and "not suppressed" in missing["error"]["message"]
    send(proc, ["bob@example.org"], message())
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["bob@example.org"]]

    audit = proc.call("GET", "/v1/audit")[1]["entries"]
    # the actor is the authenticated token; the reviewer named in the body is kept in the note
    bobs = [
        (e["actor"], e["action"]) for e in audit if e["target"] == "suppression:bob@example.org"
    ]
    assert bobs == [("token-1", "lift"), ("token-1", "suppress")]
    assert audit[0]["note"] == "reviewer ana: false report"


@pytest.mark.parametrize(
    ("path", "body", "raw", "field"),
    [
        ("/v1/suppressions", {"address": "x", "reviewer": "ana"}, None, "address"),
        ("/v1/suppressions", {"address": "a@example.org", "reviewer": ""}, None, "reviewer"),
        ("/v1/suppressions?reviewer=ana", None, b"name,city\r\nann,x\r\n", "body"),
        ("/v1/suppressions?reason=sad", None, None, "reason"),
        ("/v1/suppressions?limit=0", None, None, "limit"),
    ],
)
def test_suppressions_api_names_the_bad_field(
    sendguard: Start, path: str, body: object, raw: bytes | None, field: str
) -> None:
    proc = sendguard(policies=FATIGUE)
    if body is None and raw is None:
        status, answer = proc.call("GET", path)
    elif raw is not None:
        status, answer = proc.call("POST", path, raw=raw, headers={"Content-Type": "text/csv"})
    else:
        status, answer = proc.call("POST", path, body)
    assert status == 400, answer
    assert answer["error"]["field"] == field


def test_events_batch_custom_types_and_bounce_types(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(
        policies=[
            {
                "plugin": "fatigue",
                "options": {
                    "throttle_after": 1,
                    "sunset_after": 1,
                    "engagement": ["open", "click", "purchase", "visit"],
                },
            }
        ]
    )
    send(proc, ["vic@example.org"], message())
    sink.wait_for(1)
    status, answer = proc.call(
        "POST",
        "/v1/events",
        [
            {"type": "bounce", "recipient": "soft@example.org", "bounce_type": "soft"},
            {"type": "bounce", "recipient": "hard@example.org"},
            {"type": "visit", "recipient": "Vic@example.org", "offer": "spring-sale"},
            {"type": "delivered", "recipient": "vic@example.org", "message_id": "m1"},
        ],
    )
    assert status == 202, answer
    assert [r["suppression"] for r in answer["results"]] == [None, "added", None, None]
    assert answer["results"][2]["type"] == "visit"
    # a visit is engagement here: the person who had one message gets the next one
    send(proc, ["vic@example.org"], message())
    sink.wait_for(2)
    send(proc, ["soft@example.org"], message())
    sink.wait_for(3)
    hard = send(proc, ["hard@example.org"], message())
    proc.wait_states({"hard@example.org": "dropped"}, hard)
    timeline = proc.call("GET", "/v1/recipients/VIC@example.org/timeline")[1]
    assert [e["type"] for e in timeline["events"]] == ["delivered", "visit"]

    status, single = proc.call("POST", "/v1/events", {"type": "purchase", "recipient": "v@e.org"})
    assert status == 202 and single["type"] == "purchase" and single["suppression"] is None
    for body, field in (
        ({"type": "pageview", "recipient": "a@example.org"}, "type"),
        (
            [
                {"type": "open", "recipient": "a@example.org"},
                {"type": "nope", "recipient": "b@e.org"},
            ],
            "[1].type",
        ),
        (
            [{"type": "open", "recipient": "a@example.org"}, {"type": "open", "recipient": "x"}],
            "[1].recipient",
        ),
        (
            [{"type": "open", "recipient": "a@example.org", "bounce_type": "hard"}],
            "[0].bounce_type",
        ),
        ([{"type": "open", "recipient": "a@example.org", "at": "monday"}], "[0].at"),
        ([{"type": "open"}], "[0].recipient"),
        ([], "body"),
    ):
        status, error = proc.call("POST", "/v1/events", body)
        assert status == 400, (body, error)
        assert error["error"]["field"] == field, error
    # nothing of a rejected batch was recorded
    assert proc.call("GET", "/v1/recipients/a@example.org/timeline")[1]["events"] == []


def test_custom_type_refused_unless_a_policy_reads_it(sendguard: Start) -> None:
    proc = sendguard(policies=FATIGUE)
    status, error = proc.call("POST", "/v1/events", {"type": "visit", "recipient": "a@example.org"})
    assert status == 400 and error["error"]["field"] == "type"
    assert "engagement" in error["error"]["message"]


@pytest.mark.both_backends
def test_a_batch_keeps_each_persons_events_in_order_however_many_people(
    sendguard: Start,
) -> None:
    # A batch's people are recorded at once (their writes share commits); each person's own
    # events keep the batch's order, whatever the address's spelling.
    proc = sendguard()
    now = datetime.now(UTC)
    earlier, later = (f"{(now - timedelta(minutes=m)).isoformat()}" for m in (2, 1))
    batch = []
    for i in range(500):
        unsubscribe = {"type": "unsubscribe", "recipient": f"p{i}@example.org", "at": earlier}
        resubscribe = {"type": "resubscribe", "recipient": f"P{i}@Example.ORG", "at": later}
        # even: opted out, then back in (lifted); odd: the "yes" first, then the "no"
        batch += [unsubscribe, resubscribe] if i % 2 == 0 else [resubscribe, unsubscribe]
    status, answer = proc.call("POST", "/v1/events", batch)
    assert status == 202, answer
    effects = [r["suppression"] for r in answer["results"]]
    assert effects == [
        effect
        for i in range(500)
        for effect in (("added", "lifted") if i % 2 == 0 else ("not_suppressed", "added"))
    ]
    assert [r["recipient"].lower() for r in answer["results"][:2]] == ["p0@example.org"] * 2
    suppressed, cursor = set(), ""
    while cursor is not None:
        _status, page = proc.call("GET", f"/v1/suppressions?limit=500{cursor}")
        suppressed |= {s["address"].lower() for s in page["suppressions"]}
        cursor = f"&after={page['next']}" if page["next"] else None
    assert suppressed == {f"p{i}@example.org" for i in range(1, 500, 2)}
