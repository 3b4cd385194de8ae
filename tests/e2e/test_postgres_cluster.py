"""Several sendguard instances on one PostgreSQL: caps, review, crashes and outages."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sendguard.store.postgres import lock_key
from tests.e2e.test_send_path import message, send
from tests.e2e.test_simulation_api import simulation_worker, wait_finished
from tests.support.postgres import DSN, drop_schema_sync, new_schema
from tests.support.process import SendguardProcess, base_config
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
ROLE = "sendguard_test"


async def _admin(*statements: str) -> list[Any]:
    conn = await asyncpg.connect(DSN)
    try:
        return [await conn.fetch(s) for s in statements]
    finally:
        await conn.close()


def admin(*statements: str) -> list[Any]:
    return asyncio.run(_admin(*statements))


@pytest.fixture(scope="module", autouse=True)
def role() -> None:
    """A login role of its own, so a test can cut sendguard off without stopping the server."""
    admin(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') "
        f"THEN CREATE ROLE {ROLE} LOGIN; END IF; END $$",
        f"ALTER ROLE {ROLE} LOGIN",
        f"GRANT CREATE ON DATABASE test TO {ROLE}",
    )


@pytest.fixture
def cluster(tmp_path: Path, sink: Sink) -> Iterator[Callable[..., list[SendguardProcess]]]:
    schema = new_schema()
    started: list[SendguardProcess] = []

    def start(count: int = 2, **sections: Any) -> list[SendguardProcess]:
        for _i in range(count):
            config = base_config(sink.port)
            config["store"] = {
                "url": f"postgresql://{ROLE}@127.0.0.1:5432/test",
                "schema": schema,
                "busy_timeout": "2s",
                "pool_size": 8,
            }
            config["delivery"]["lease"] = "3s"
            for section, values in sections.items():
                config[section] = (
                    {**config[section], **values} if isinstance(values, dict) else values
                )
            workdir = tmp_path / f"instance{len(started)}"
            workdir.mkdir()
            proc = SendguardProcess(workdir, config)
            proc.start()
            started.append(proc)
        return started[-count:]

    yield start
    for proc in started:
        proc.stop()
    admin(f"ALTER ROLE {ROLE} LOGIN")
    drop_schema_sync(schema)


def db_states(schema_proc: SendguardProcess) -> Counter[str]:
    status, page = schema_proc.call("GET", "/v1/deliveries?limit=500")
    assert status == 200
    return Counter(d["state"] for d in page["deliveries"])


CAP_3 = [
    {
        "plugin": "frequency",
        "options": {"caps": [{"scope": "recipient", "limit": 3, "window": "1d"}]},
    }
]


def test_caps_hold_across_two_instances(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    a, b = cluster(2, policies=CAP_3)
    recipients = [f"p{i}@example.org" for i in range(50)]
    errors: list[BaseException] = []

    def worker(proc: SendguardProcess, offset: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=60) as client:
                for n in range(offset, 500, 4):
                    client.sendmail(
                        "shop@example.com", [recipients[n % 50]], message(subject=f"m{n}")
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p, o)) for o, p in enumerate([a, b, a, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sink.wait_for(150, timeout=60)
    time.sleep(1.0)
    got = sink.received
    assert len(got) == 150
    per_person = Counter(r.rcpt_tos[0] for r in got)
    assert set(per_person.values()) == {3}
    assert len({r.message["Subject"] for r in got}) == 150  # none twice


def test_approval_on_one_instance_releases_held_work_everywhere(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    a, b = cluster(2, policies=[{"plugin": "human_hold"}], delivery={"poll_interval": "30s"})
    send(a, ["x@example.org"], message("X-Sendguard-Campaign: fall"))
    send(b, ["y@example.org"], message("X-Sendguard-Campaign: fall"))
    status, answer = a.call("POST", "/v1/campaigns/fall/approve", {"reviewer": "ana"})
    assert status == 200 and answer["deliveries"] == 2
    got = sink.wait_for(2, timeout=5)
    assert sorted(r.rcpt_tos[0] for r in got) == ["x@example.org", "y@example.org"]
    # facts posted to one instance wake deliveries any instance accepted, via NOTIFY
    send(b, ["z@example.org"], message("X-Sendguard-Requires: m:1=done"))
    started = time.monotonic()
    a.call("POST", "/v1/facts", {"key": "m:1", "value": "done"})
    sink.wait_for(3, timeout=10)
    assert time.monotonic() - started < 10.0  # woken by NOTIFY, not by the 30 s poll


def test_kill_9_of_one_instance_its_claims_are_delivered_by_the_other(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    a, b = cluster(2)
    b.stop()  # only A works at first, so A holds the claims when it dies
    sink.handler.delay = 2.0
    for i in range(6):
        send(a, [f"k{i}@example.org"], message())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and db_states(a)["sending"] == 0:
        time.sleep(0.05)
    assert db_states(a)["sending"] > 0
    a.kill9()
    sink.handler.delay = 0.0
    b.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and db_states(b)["sent"] < 6:
        time.sleep(0.2)
    assert db_states(b)["sent"] == 6
    delivered = {r.rcpt_tos[0] for r in sink.received}
    assert delivered == {f"k{i}@example.org" for i in range(6)}


def claims(proc: SendguardProcess) -> dict[str, str | None]:
    """The owner of each delivery's claim, by recipient, read from the database."""
    (rows,) = admin(f'SELECT recipient, owner FROM "{proc.config["store"]["schema"]}".deliveries')
    return {row["recipient"]: row["owner"] for row in rows}


def test_a_restarted_instance_sends_what_it_had_claimed_at_once_and_spares_a_live_ones(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    # The lease is the default's 5 minutes: what is sent within seconds of the restart was
    # released at start, not taken over when its lease ran out.
    a, b = cluster(2, delivery={"lease": "5m"})
    sink.handler.delay = 30.0  # every send now stays in flight until long after the restart
    send(b, ["live@example.org"], message())
    mine = [f"k{i}@example.org" for i in range(4)]
    for recipient in mine:
        send(a, [recipient], message())
    owners = claims(a)
    assert all(owners[r] is not None and owners[r] != owners["live@example.org"] for r in mine)
    a.kill9()
    sink.handler.delay = 0.0
    restarted = time.monotonic()
    a.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and db_states(a)["sent"] < len(mine):
        time.sleep(0.1)
    assert db_states(a)["sent"] == len(mine), "not sent again within 30 s of the restart"
    again = [r.rcpt_tos[0] for r in sink.received if r.at >= restarted]
    assert sorted(again) == mine
    # B's send is still in flight at the sink, and B still holds its claim: not taken.
    assert claims(a)["live@example.org"] == owners["live@example.org"]
    assert db_states(a)["sending"] == 1
    sink.handler.release()  # B's send ends now, and B records it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and db_states(a)["sent"] < len(mine) + 1:
        time.sleep(0.1)
    assert db_states(a)["sent"] == len(mine) + 1
    assert [r.rcpt_tos[0] for r in sink.received].count("live@example.org") == 1


def test_terminated_connections_lose_no_accepted_message(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    (a,) = cluster(1)
    accepted: list[str] = []
    refusals: list[str] = []
    stop = threading.Event()

    def terminator() -> None:
        while not stop.is_set():
            admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'"
            )
            time.sleep(0.15)

    killer = threading.Thread(target=terminator)
    killer.start()
    try:
        for i in range(120):
            try:
                accepted.append(send(a, [f"t{i}@example.org"], message(subject=f"t{i}")))
            except (AssertionError, smtplib.SMTPException) as exc:
                refusals.append(str(exc))
    finally:
        stop.set()
        killer.join()
    assert accepted, "nothing got through at all"
    assert all("451" in r or "4.3.0" in r for r in refusals), refusals  # only "try again"
    wanted = set()
    for msg_id in accepted:  # every message answered 250 is in the store...
        status, msg = a.call("GET", f"/v1/messages/{msg_id}")
        assert status == 200, msg
        wanted.add(msg["subject"])
    deadline = time.monotonic() + 60
    got: set[str] = set()
    while time.monotonic() < deadline and not wanted <= got:
        got = {r.message["Subject"] for r in sink.received}
        time.sleep(0.1)
    assert wanted <= got  # ...and reaches the upstream (at least once)
    assert got <= {f"t{i}" for i in range(120)}


def test_losing_the_database_answers_451_and_503_then_resumes(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    (a,) = cluster(1)
    send(a, ["before@example.org"], message())
    admin(
        f"ALTER ROLE {ROLE} NOLOGIN",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'",
    )
    try:
        with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=30) as client:
            client.ehlo("t")
            client.mail("shop@example.com")
            client.rcpt("during@example.org")
            code, reply = client.data(message())
        assert code == 451 and reply.startswith(b"4.3.0")
        status, body = a.call(
            "POST", "/v1/messages", {"from": "s@example.com", "to": ["d@example.org"]}
        )
        assert status == 503 and body["error"]["code"] == "store_unavailable", a.log()[-4000:]
        assert a.http_get("/readyz")[0] == 503
    finally:
        admin(f"ALTER ROLE {ROLE} LOGIN")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and a.http_get("/readyz")[0] != 200:
        time.sleep(0.2)
    assert a.http_get("/readyz")[0] == 200
    send(a, ["after@example.org"], message())
    got = sink.wait_for(2, timeout=20)
    assert {r.rcpt_tos[0] for r in got} == {"before@example.org", "after@example.org"}


def test_a_policy_out_of_time_mid_read_leaves_the_connection_usable(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    """A policy whose budget runs out while its PostgreSQL read is under way (context's read
    of a premise's fact) is held with "timed out", and the message is still accepted (250)
    and recorded: the read was cancelled as asyncpg expects, so the intake's next statements
    on the recipient's connection run. (Closing the policy's coroutine instead left the
    connection mid-query: 451.)"""
    (proc,) = cluster(1, policies=[{"plugin": "context", "budget": "0.001ms"}])
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=30) as client:
        for n in range(10):
            client.sendmail(
                "shop@example.com",
                [f"p{n}@example.org"],
                message("X-Sendguard-Requires: meeting:1:status=completed"),
            )
    states = proc.wait_settled()
    assert states == {f"p{n}@example.org": "held" for n in range(10)}
    reasons = {d["reason"] for d in proc.deliveries()}
    assert reasons == {"context: policy context failed (timed out after 1e-06s); on_error=hold"}, (
        reasons
    )


def test_the_recipient_s_lock_wait_is_no_policy_s_time(
    cluster: Callable[..., list[SendguardProcess]], sink: Sink
) -> None:
    """Another instance deciding for the same address holds the recipient's lock (here a
    connection of the test's, for 0.6 s): the wait for it is not frequency's time, whose
    budget is 50 ms. make bench's two-instance row held six deliveries with "timed out"
    (session 11): the lock was taken by frequency's first read, inside its budget."""
    (proc,) = cluster(1, policies=[{"plugin": "frequency", "budget": "50ms"}])
    replies: list[Any] = []

    def deliver() -> None:
        with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=30) as client:
            replies.append(client.sendmail("shop@example.com", ["Same@Example.org"], message()))

    async def hold_the_lock() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", lock_key("same@example.org"))
            sender = threading.Thread(target=deliver)
            sender.start()
            await asyncio.sleep(0.6)
            await conn.execute("SELECT pg_advisory_unlock_all()")
            await asyncio.to_thread(sender.join, 30)
        finally:
            await conn.close()

    asyncio.run(hold_the_lock())
    assert replies == [{}]
    assert proc.wait_settled() == {"Same@Example.org": "sent"}, proc.deliveries()


def test_a_simulation_is_one_at_a_time_and_readable_across_instances(
    cluster: Callable[..., list[SendguardProcess]],
) -> None:
    a, b = cluster(2, policies=[{"plugin": "schedule"}])
    send(a, ["ann@example.org"], message(subject="one"))
    a.wait_settled()
    status, started = a.call("POST", "/v1/simulations", {"config": "policies: []\n"})
    assert status == 202, started
    worker = simulation_worker(a)
    os.kill(worker, signal.SIGSTOP)  # held running while the other instance is asked
    try:
        status, refused = b.call("POST", "/v1/simulations", {"config": "policies: []\n"})
        assert status == 409 and refused["error"]["id"] == started["id"], refused
        status, running = b.call("GET", f"/v1/simulations/{started['id']}")
        assert (status, running["status"]) == (200, "running"), running
    finally:
        os.kill(worker, signal.SIGCONT)
    done = wait_finished(b, started["id"])  # written by a, read on b
    assert done["status"] == "done", done
    assert done["report"]["deliveries"] == 1
    status, page = b.call("GET", f"/v1/simulations/{started['id']}?format=html")
    assert status == 200 and "<!doctype html" in page.lower()
    status, again = b.call("POST", "/v1/simulations", {"config": "policies: []\n"})
    assert status == 202, again
    assert wait_finished(a, again["id"])["status"] == "done"
