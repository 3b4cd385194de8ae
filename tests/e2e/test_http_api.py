"""The HTTP API end to end: a real sendguard process, real HTTP on loopback, a real sink."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from sendguard.ingress.route import Auth
from sendguard.ingress.routes import ROUTES
from tests.e2e.test_send_path import message, send
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]

REVIEWED = [
    {"plugin": "schedule"},
    {"plugin": "context"},
    {"plugin": "human_hold", "options": {"hold_unapproved_campaigns": True}},
]


def send_json(proc: SendguardProcess, **payload: Any) -> dict[str, Any]:
    body = {
        "from": "shop@example.com",
        "to": ["ann@example.org"],
        "subject": "Hello",
        "text": "Hi Ann",
        **payload,
    }
    status, answer = proc.call("POST", "/v1/messages", body)
    assert status == 202, answer
    assert isinstance(answer, dict)
    return answer


def test_send_json_delivers_with_bcc_hidden(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    answer = send_json(
        proc,
        to=["ann@example.org"],
        cc=["bob@example.org"],
        bcc=["secret@example.org"],
        html="<p>Hi</p>",
        headers={"X-Campaign": "spring", "Reply-To": "help@example.com"},
    )
    assert [d["recipient"] for d in answer["deliveries"]] == [
        "ann@example.org",
        "bob@example.org",
        "secret@example.org",
    ]
    assert all(d["state"] == "queued" for d in answer["deliveries"])
    assert answer["deliveries"][0]["reasons"][0]["policy"] == "schedule"
    got = sink.wait_for(3)
    for received in got:
        assert b"secret@example.org" not in received.content
        assert received.message["Reply-To"] == "help@example.com"
        assert received.message.is_multipart()
    status, msg = proc.call("GET", f"/v1/messages/{answer['id']}")
    assert status == 200
    assert msg["campaign"] == "spring"
    assert msg["subject"] == "Hello"
    proc.wait_states(
        dict.fromkeys(["ann@example.org", "bob@example.org", "secret@example.org"], "sent"),
        answer["id"],
    )
    status, msg = proc.call("GET", f"/v1/messages/{answer['id']}")
    states = [t["state"] for t in msg["deliveries"][0]["transitions"]]
    assert states == ["queued", "sending", "sent"]


def test_send_raw_rfc822_with_envelope_from_headers_or_query(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    raw = message("Cc: Carl <carl@example.org>", "X-Sendguard-Campaign: raw")
    status, answer = proc.call(
        "POST", "/v1/messages", raw=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert status == 202, answer
    assert sorted(d["recipient"] for d in answer["deliveries"]) == [
        "carl@example.org",
        "list@example.net",
    ]
    status, answer = proc.call(
        "POST",
        "/v1/messages?from=other@example.com&to=x@example.org&to=y@example.org",
        raw=raw,
        headers={"Content-Type": "message/rfc822"},
    )
    assert status == 202, answer
    assert [d["recipient"] for d in answer["deliveries"]] == ["x@example.org", "y@example.org"]
    got = sink.wait_for(4)
    assert {r.mail_from for r in got} == {"shop@example.com", "other@example.com"}
    assert all(b"X-Sendguard" not in r.content for r in got)


def test_idempotent_retries_create_one_delivery(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    body = {"from": "shop@example.com", "to": ["once@example.org"], "subject": "Once"}
    answers: list[tuple[int, Any]] = []

    def post() -> None:
        answers.append(
            proc.call("POST", "/v1/messages", body, headers={"Idempotency-Key": "order-42"})
        )

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _ in answers} == {202}
    assert len({a["id"] for _, a in answers}) == 1
    assert len({a["deliveries"][0]["id"] for _, a in answers}) == 1
    # Later retries too; another body under the same key is refused (issue 10), not answered.
    status, again = proc.call("POST", "/v1/messages", body, headers={"Idempotency-Key": "order-42"})
    assert status == 202 and again["id"] == answers[0][1]["id"]
    status, refused = proc.call(
        "POST",
        "/v1/messages",
        {**body, "to": ["other@example.org"]},
        headers={"Idempotency-Key": "order-42"},
    )
    assert status == 422 and refused["error"]["code"] == "idempotency_key_reused"
    sink.wait_for(1)
    assert proc.wait_settled() == {"once@example.org": "sent"}
    assert len(sink.received) == 1


def test_deliveries_filter_and_paginate(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    for i in range(5):
        send_json(proc, to=[f"p{i}@example.org"], campaign="odd" if i % 2 else "even")
    status, page = proc.call("GET", "/v1/deliveries?limit=2")
    assert status == 200 and len(page["deliveries"]) == 2
    seen = [d["recipient"] for d in page["deliveries"]]
    while page["next_cursor"]:
        status, page = proc.call("GET", f"/v1/deliveries?limit=2&cursor={page['next_cursor']}")
        seen += [d["recipient"] for d in page["deliveries"]]
    assert seen == [f"p{i}@example.org" for i in reversed(range(5))]
    status, odd = proc.call("GET", "/v1/deliveries?campaign=odd")
    assert {d["recipient"] for d in odd["deliveries"]} == {"p1@example.org", "p3@example.org"}
    status, one = proc.call("GET", "/v1/deliveries?recipient=P2@example.org")
    assert [d["recipient"] for d in one["deliveries"]] == ["p2@example.org"]
    status, err = proc.call("GET", "/v1/deliveries?state=lost")
    assert status == 400 and err["error"]["field"] == "state"


def test_fact_releases_or_drops_a_waiting_delivery_promptly(sendguard: Start, sink: Sink) -> None:
    # poll_interval is 30 s: acting well before that proves the fact woke the delivery.
    proc = sendguard(policies=[{"plugin": "context"}], delivery={"poll_interval": "30s"})
    kept = send_json(proc, to=["met@example.org"], requires=["meeting:1:status=completed"])
    spared = send_json(proc, to=["noshow@example.org"], requires=["meeting:2:status=completed"])
    assert kept["deliveries"][0]["state"] == "delayed"
    assert kept["deliveries"][0]["reason"].startswith(
        "context: waiting for meeting:1:status=completed until "
    )

    status, answer = proc.call(
        "POST", "/v1/facts", {"key": "meeting:1:status", "value": "completed"}
    )
    assert status == 202 and answer["woken"] == 1
    sink.wait_for(1, timeout=15)

    proc.call("POST", "/v1/facts", {"key": "meeting:2:status", "value": "no_show"})
    proc.wait_states({"noshow@example.org": "dropped"}, spared["id"], timeout=15)
    status, line = proc.call("GET", "/v1/recipients/noshow@example.org/timeline")
    assert line["deliveries"][0]["state"] == "dropped"
    assert line["deliveries"][0]["reason"] == (
        "context: meeting:2:status is 'no_show', the message requires 'completed'"
    )
    assert [r.rcpt_tos for r in sink.received] == [["met@example.org"]]


def test_event_wakes_deliveries_of_that_recipient(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "context"}], delivery={"poll_interval": "30s"})
    send_json(proc, to=["ev@example.org"], requires=["deal:1:stage=won"])
    status, answer = proc.call(
        "POST", "/v1/events", {"type": "unsubscribe", "recipient": "ev@example.org"}
    )
    assert status == 202 and answer["woken"] == 1
    status, line = proc.call("GET", "/v1/recipients/ev@example.org/timeline")
    assert line["events"][0]["type"] == "unsubscribe"


def test_review_one_delivery(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    a = send_json(proc, to=["a@example.org"], campaign="launch")["deliveries"][0]
    b = send_json(proc, to=["b@example.org"], campaign="launch")["deliveries"][0]
    assert a["state"] == b["state"] == "held"
    assert a["reason"] == "human_hold: campaign launch is not approved yet"

    status, view = proc.call("POST", f"/v1/deliveries/{a['id']}/approve", {"note": "checked"})
    # The actor is the token's name (a plain token is `token-N`), never a body field.
    assert status == 200 and view["approved_by"] == "token-1"
    sink.wait_for(1)
    status, view = proc.call("POST", f"/v1/deliveries/{b['id']}/reject", {})
    assert status == 200 and view["state"] == "dropped"
    status, err = proc.call("POST", f"/v1/deliveries/{b['id']}/approve", {})
    assert status == 409 and "not held" in err["error"]["message"]
    status, err = proc.call("POST", "/v1/deliveries/nope/approve", {})
    assert status == 404
    status, err = proc.call("POST", f"/v1/deliveries/{a['id']}/approve", {"reviewer": ""})
    assert status == 400 and err["error"]["field"] == "reviewer"
    proc.wait_states({"a@example.org": "sent", "b@example.org": "dropped"})
    assert [r.rcpt_tos for r in sink.received] == [["a@example.org"]]


def test_campaign_approval_releases_held_and_later_ones_flow(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    for i in range(3):
        send_json(proc, to=[f"h{i}@example.org"], campaign="autumn")
    send_json(proc, to=["r0@example.org", "r1@example.org"], campaign="spam")
    status, campaigns = proc.call("GET", "/v1/campaigns")
    by_name = {c["name"]: c for c in campaigns["campaigns"]}
    assert by_name["autumn"]["state"] == "pending" and by_name["autumn"]["counts"]["held"] == 3

    status, answer = proc.call("POST", "/v1/campaigns/autumn/approve", {"note": "copy reviewed"})
    assert status == 200 and answer["deliveries"] == 3
    sink.wait_for(3)
    later = send_json(proc, to=["late@example.org"], campaign="autumn")
    assert later["deliveries"][0]["state"] == "queued"
    sink.wait_for(4)

    status, answer = proc.call("POST", "/v1/campaigns/spam/reject", {"reviewer": "bob"})
    assert status == 200 and answer["deliveries"] == 2
    after = send_json(proc, to=["r2@example.org"], campaign="spam")
    assert after["deliveries"][0]["state"] == "dropped"
    proc.wait_states({"r0@example.org": "dropped", "r1@example.org": "dropped"})

    status, audit = proc.call("GET", "/v1/audit")
    assert [(e["actor"], e["action"], e["target"], e["count"]) for e in audit["entries"]] == [
        ("token-1", "reject-campaign", "campaign:spam", 2),
        ("token-1", "approve-campaign", "campaign:autumn", 3),
    ]
    # A reviewer named in the body is part of the note, never the actor.
    assert audit["entries"][0]["note"] == "reviewer bob"
    assert audit["entries"][1]["note"] == "copy reviewed"
    proc.wait_settled()
    assert len(sink.received) == 4


def test_approval_lifts_only_the_human_hold(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    held = send_json(proc, to=["c@example.org"], campaign="q4", requires=["crm:c:status=customer"])[
        "deliveries"
    ][0]
    assert held["state"] == "held"
    proc.call("POST", "/v1/facts", {"key": "crm:c:status", "value": "churned"})
    status, _view = proc.call("POST", f"/v1/deliveries/{held['id']}/approve", {"reviewer": "ana"})
    assert status == 200
    proc.wait_states({"c@example.org": "dropped"})
    status, line = proc.call("GET", "/v1/recipients/c@example.org/timeline")
    assert "crm:c:status is 'churned'" in line["deliveries"][0]["reason"]
    assert sink.received == []


def test_pause_holds_queued_and_new_until_resume(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "schedule"}])
    future = "2099-01-01T00:00:00Z"
    send_json(proc, to=["w@example.org"], campaign="promo", not_before=future)
    status, answer = proc.call("POST", "/v1/campaigns/promo/pause", {"reviewer": "ana"})
    assert status == 200 and answer["deliveries"] == 1 and answer["paused"]
    new = send_json(proc, to=["n@example.org"], campaign="promo")
    assert new["deliveries"][0]["state"] == "held"
    assert new["deliveries"][0]["reason"] == "campaign-pause: campaign promo is paused"
    status, campaigns = proc.call("GET", "/v1/campaigns")
    assert campaigns["campaigns"][0]["state"] == "paused"
    proc.wait_settled()
    assert sink.received == []

    status, answer = proc.call("POST", "/v1/campaigns/promo/resume", {"reviewer": "ana"})
    assert status == 200 and answer["deliveries"] == 2
    sink.wait_for(1)
    proc.wait_states({"n@example.org": "sent", "w@example.org": "delayed"})
    status, audit = proc.call("GET", "/v1/audit")
    assert [e["action"] for e in audit["entries"]] == ["resume", "pause"]


def test_timeline_shows_everything_newest_first(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    send(proc, ["tl@example.org"], message())
    send_json(proc, to=["tl@example.org"], campaign="new")
    status, line = proc.call("GET", "/v1/recipients/tl@example.org/timeline")
    assert status == 200 and line["recipient"] == "tl@example.org"
    assert next(d["state"] for d in line["deliveries"]) == "held"
    assert line["deliveries"][0]["reasons"][-1]["policy"] == "human_hold"
    assert len(line["deliveries"]) == 2


def every_route(proc: SendguardProcess) -> list[tuple[str, str]]:
    status, doc = proc.call("GET", "/openapi.json", token=None)
    assert status == 200
    return [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops]


def test_no_token_means_401_everywhere_and_nothing_changes(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=REVIEWED)
    held = send_json(proc, to=["keep@example.org"], campaign="c")["deliveries"][0]
    before = snapshot(proc)
    auth = {(r.method, r.path): r.auth for r in ROUTES}
    public = {route for route, kind in auth.items() if kind in (Auth.PUBLIC, Auth.METRICS)}
    assert public == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
    }
    for method, path in every_route(proc):
        concrete = (
            path.replace("{id}", held["id"])
            .replace("{name}", "c")
            .replace("{address}", "keep@example.org")
            .replace("{domain}", "mg.example.com")
            .replace("{secret}", "not-the-configured-secret")
        )
        body = {
            "reviewer": "x",
            "key": "k",
            "value": "v",
            "type": "open",
            "recipient": "keep@example.org",
            "from": "a@example.com",
            "to": ["b@example.org"],
        }
        for token in (None, "wrong-token", TOKEN[:-1]):
            status, answer = proc.call(
                method, concrete, body if method == "POST" else None, token=token
            )
            if (method, path) in public:
                assert status != 401, path
            else:
                assert status == 401, (method, path, token, answer)
                if auth[(method, path)] is Auth.TOKEN:  # the others answer in their ESP's shape
                    assert answer["error"]["code"] == "unauthorized"
    assert snapshot(proc) == before


def test_metrics_can_require_a_token(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(http={"metrics_public": False})
    assert proc.call("GET", "/metrics", token=None)[0] == 401
    assert proc.call("GET", "/metrics")[0] == 200


def snapshot(proc: SendguardProcess) -> list[Any]:
    with sqlite3.connect(f"file:{proc.db_path}?mode=ro", uri=True) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in (
                "messages",
                "deliveries",
                "transitions",
                "facts",
                "events",
                "campaigns",
                "audit",
                "idempotency",
            )
        ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": ["a@example.org"]}, "from"),
        ({"from": "shop@example.com"}, "to"),
        ({"from": "shop@example.com", "to": ["not an address"]}, "to[0]"),
        ({"from": "shop@example.com", "to": ["a@example.org"], "bcc": ["x@@y"]}, "bcc[0]"),
        ({"from": "shop@example.com", "to": ["a@example.org"], "colour": "red"}, "colour"),
        ({"from": "shop@example.com", "to": ["a@example.org"], "not_before": "soon"}, "not_before"),
        ({"from": "shop@example.com", "to": ["a@example.org"], "requires": ["x"]}, "requires[0]"),
        ({"from": "shop@example.com", "to": ["a@example.org"], "wait": "long"}, "wait"),
        (
            {"from": "shop@example.com", "to": ["a@example.org"], "timezone": "Moon/Base"},
            "timezone",
        ),
        ({"from": "shop@example.com", "to": ["a@example.org"], "class": "spam"}, "class"),
        (
            {"from": "shop@example.com", "to": ["a@example.org"], "subject": "a\r\nBcc: x@y.z"},
            "subject",
        ),
        (
            {
                "from": "shop@example.com",
                "to": ["a@example.org"],
                "headers": {"X-A": "1\r\nX-B: 2"},
            },
            "headers",
        ),
        ([1, 2, 3], None),
    ],
)
def test_bad_send_payloads_name_the_field(
    sendguard: Start, sink: Sink, body: Any, field: str | None
) -> None:
    proc = sendguard()
    status, answer = proc.call("POST", "/v1/messages", body)
    assert status == 400, answer
    assert answer["error"]["code"]
    if field is not None:
        assert answer["error"]["field"] == field, answer
    assert proc.states() == {}


def test_errors_have_one_shape(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(http={"max_body_size": 2000})
    status, answer = proc.call("GET", "/v1/nowhere")
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = proc.call("DELETE", "/v1/messages")
    assert status == 405 and answer["error"]["code"]
    status, answer = proc.call(
        "POST", "/v1/messages", raw=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {"from": "a@example.com", "to": ["b@example.org"], "text": "x" * 5000},
    )
    assert status == 413 and "max_body_size" in answer["error"]["message"]
    status, answer = proc.call("GET", "/v1/messages/unknown")
    assert status == 404
    status, answer = proc.call("POST", "/v1/facts", {"key": "k"})
    assert status == 400 and answer["error"]["field"] == "value"
    status, answer = proc.call("POST", "/v1/events", {"type": "sneeze", "recipient": "a@b.org"})
    assert status == 400 and answer["error"]["field"] == "type"
    assert json.dumps(answer)


def test_answers_do_not_name_the_server_software_or_its_version(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    base = f"http://127.0.0.1:{proc.http_port}"
    answers = []
    for path, headers in (
        ("/healthz", {}),  # public
        ("/v1/deliveries", {}),  # refused: no token
        ("/v1/deliveries", {"Authorization": f"Bearer {TOKEN}"}),
        ("/no/such/path", {"Authorization": f"Bearer {TOKEN}"}),
    ):
        request = urllib.request.Request(base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                answers.append((answer.status, answer.headers.get_all("Server")))
        except urllib.error.HTTPError as refused:
            answers.append((refused.code, refused.headers.get_all("Server")))
    assert [status for status, _ in answers] == [200, 401, 200, 404]
    assert all(server == ["sendguard"] for _, server in answers), answers
