"""Review page sign-ins kept in the store: they hold whichever worker (`--workers 2`) or
instance (two on one PostgreSQL schema) answers, survive a restart, expire on every instance,
and the failed-sign-in throttle counts for the whole service. Plain HTTP with cookies: a
browser adds nothing here (tests/e2e/test_review_page.py drives the page in Chromium)."""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from sendguard.password import hash_password
from sendguard.sign_ins import token_hash
from tests.e2e.test_review_page import HOLD, USERS, NoRedirect, base, hold_plain, post
from tests.e2e.test_workers import QUIET, TWO, wait_workers
from tests.support.postgres import DSN, drop_schema_sync, new_schema
from tests.support.process import SendguardProcess, base_config, stopped
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

Start = Callable[..., SendguardProcess]
WRONG = "Wrong user name or password."


@pytest.fixture
def pair(tmp_path: Path, sink: Sink) -> Iterator[tuple[SendguardProcess, SendguardProcess]]:
    """Two instances on one fresh PostgreSQL schema (as behind a load balancer), holding
    campaign mail for the review page's users."""
    schema = new_schema()
    started: list[SendguardProcess] = []
    try:
        for n in range(2):
            config = base_config(sink.port)
            config["store"] = {"url": DSN, "schema": schema, "pool_size": 4}
            config["policies"] = HOLD
            config["review"] = {"users": USERS}
            workdir = tmp_path / f"instance{n}"
            workdir.mkdir()
            started.append(SendguardProcess(workdir, config))
            started[-1].start()
        yield started[0], started[1]
    finally:
        for proc in started:
            proc.stop()
        drop_schema_sync(schema)


def fetch(proc: SendguardProcess, path: str, cookies: dict[str, str]) -> tuple[int, str, Any]:
    """GET (redirects not followed) with these cookies: status, body, headers."""
    request = urllib.request.Request(base(proc) + path)
    if cookies:
        request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers


def set_cookies(headers: Any) -> dict[str, str]:
    """The cookies a response sets (an empty value: deleted)."""
    found = {}
    for line in headers.get_all("Set-Cookie") or []:
        name, value = line.split(";")[0].split("=", 1)
        found[name] = value.strip('"')
    return found


def attempt(proc: SendguardProcess, user: str, password: str) -> tuple[int, Any]:
    """Open the sign-in form and send it: status and headers of the answer."""
    status, page, headers = fetch(proc, "/review/login", {})
    assert status == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    request = urllib.request.Request(
        base(proc) + "/review/login",
        data=urllib.parse.urlencode(
            {"username": user, "password": password, "csrf_token": token.group(1)}
        ).encode(),
        method="POST",
    )
    request.add_header("Origin", base(proc))
    request.add_header(
        "Cookie", f"sendguard_login_csrf={set_cookies(headers)['sendguard_login_csrf']}"
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.headers


def sign_in(proc: SendguardProcess, user: str = "ana") -> str:
    """Sign in; the session cookie's value."""
    status, headers = attempt(proc, user, f"{user}-password")
    assert status == 303 and headers["Location"] == "/review", status
    return set_cookies(headers)["sendguard_session"]


def queue(proc: SendguardProcess, session: str) -> str:
    """The queue page of a signed-in session (fails if it is not signed in)."""
    status, page, headers = fetch(proc, "/review", {"sendguard_session": session})
    assert status == 200, (status, headers.get("Location"), page[:300])
    assert "Held for review" in page
    return page


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def signed_out(proc: SendguardProcess, session: str) -> bool:
    status, _, headers = fetch(proc, "/review", {"sendguard_session": session})
    return status == 303 and headers["Location"] == "/review/login"


def test_two_workers_keep_one_sign_in_whichever_answers(sendguard: Start) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS}, delivery=QUIET, serve_args=TWO)
    assert "sign-ins are kept per worker" not in proc.log()
    first, second = wait_workers(proc, 2)
    # Each phase has one worker stopped while the other is idle but for the request (no mail
    # yet, the dispatcher polls every 30 s): a worker stopped mid-write would hold SQLite's
    # lock, which is not what this test is about.
    with stopped(second):
        session = sign_in(proc)  # made by the first worker
    for n in range(20):
        with stopped((first, second)[n % 2]):  # answered by each in turn
            page = queue(proc, session)
    with stopped(first):
        status, _ = post(proc, "/review/logout", {"csrf_token": csrf_of(page)}, session)
        assert status == 303
    with stopped(second):  # signed out by the second worker: refused by the first
        assert signed_out(proc, session)

    # A decision's notice is shown once, whichever worker shows it.
    held = hold_plain(proc)
    session = sign_in(proc)
    status, _ = post(
        proc,
        f"/review/deliveries/{held}/approve",
        {"csrf_token": csrf_of(queue(proc, session)), "next": "/review"},
        session,
    )
    assert status == 303
    assert "Delivery to ann@example.org: approved" in queue(proc, session)
    assert "Delivery to ann@example.org: approved" not in queue(proc, session)


def test_a_session_survives_a_restart_and_a_copy_of_the_store_signs_nobody_in(
    sendguard: Start, tmp_path: Path
) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS})
    hold_plain(proc)
    session = sign_in(proc)
    proc.stop()
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for part in proc.db_path.parent.glob("sendguard.db*"):
        shutil.copy(part, stolen / part.name)
    proc.start()
    queue(proc, session)

    for part in stolen.iterdir():
        assert session.encode() not in part.read_bytes()
    conn = sqlite3.connect(stolen / "sendguard.db")
    try:
        kept = [row[0] for row in conn.execute("SELECT token_hash FROM review_sessions")]
    finally:
        conn.close()
    assert kept == [token_hash(session)]
    # What the copy holds opens nothing.
    assert signed_out(proc, kept[0])


async def _expire(schema: str) -> None:
    conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
    try:
        await conn.execute("UPDATE review_sessions SET expires_at = started_at")
    finally:
        await conn.close()


@pytest.mark.postgres
def test_a_sign_in_on_one_instance_holds_on_the_other_and_expires_on_both(
    pair: tuple[SendguardProcess, SendguardProcess],
) -> None:
    a, b = pair
    held = hold_plain(a)
    session = sign_in(a)
    page = queue(b, session)
    status, _ = post(
        b,
        f"/review/deliveries/{held}/approve",
        {"csrf_token": csrf_of(page), "next": "/review"},
        session,
    )
    assert status == 303
    assert "Delivery to ann@example.org: approved" in queue(a, session)
    assert "Delivery to ann@example.org: approved" not in queue(b, session)

    vic = sign_in(b, "vic")
    # A new password for ana, reloaded on B: her session ends there, and so everywhere.
    ana = {"password_hash": hash_password("new-password"), "role": "reviewer"}
    b.config["review"] = {"users": {**USERS, "ana": ana}}
    b.config_path.write_text(yaml.safe_dump(b.config))
    status, answer = b.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    assert signed_out(b, session) and signed_out(a, session)
    queue(a, vic)  # vic's session is not touched
    # Once expired (its time moved back in the store), vic's session opens nothing anywhere.
    asyncio.run(_expire(str(a.config["store"]["schema"])))
    assert signed_out(a, vic) and signed_out(b, vic)


@pytest.mark.postgres
def test_the_throttle_counts_failures_across_instances_and_a_reload_counts_nothing(
    pair: tuple[SendguardProcess, SendguardProcess],
) -> None:
    a, b = pair
    for proc in (a, b, a):
        status, headers = attempt(proc, "ana", "wrong")
        # Post/Redirect/Get: back to the form, which says why once.
        assert status == 303 and headers["Location"] == "/review/login"
        notice = set_cookies(headers)
        assert notice == {"sendguard_login_notice": "failed"}
        status, page, answered = fetch(proc, "/review/login", notice)
        assert status == 200 and WRONG in page
        assert set_cookies(answered)["sendguard_login_notice"] == ""  # dropped
    for _ in range(5):  # reloading the form counts nothing and no longer says it
        status, page, _ = fetch(b, "/review/login", {})
        assert status == 200 and WRONG not in page
    for proc in (b, a):
        status, _ = attempt(proc, "ana", "wrong")
        assert status == 303
    # Five failures over two instances: ana is refused on both, even with her password.
    for proc in (a, b):
        status, headers = attempt(proc, "ana", "ana-password")
        assert status == 429 and int(headers["Retry-After"]) > 0
    sign_in(b, "vic")  # another user is not locked out by ana's failures
