"""The store's writer dies: the server answers "try again later" instead of hanging.

Nothing a client sends can end the SQLite writer task any more (whatever a job or a batch
raises is caught), so this cannot be provoked from outside a `sendguard serve` process. It
runs the real application in-process instead (its SMTP and HTTP listeners, store and
dispatcher on loopback, talked to with smtplib and urllib from threads) and ends the writer
task from inside, as a bug elsewhere or a BaseException would.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sendguard.app import App
from sendguard.config import parse_config
from tests.e2e.test_send_path import message
from tests.support.process import TOKEN, base_config

pytestmark = pytest.mark.e2e


def smtp_send(port: int, rcpt: str) -> tuple[int, str]:
    """One SMTP transaction; the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        code, reply = client.rcpt(rcpt)
        assert code == 250, reply
        code, reply = client.data(message())
    return code, reply.decode()


def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_a_dead_writer_answers_451_and_readyz_503_instead_of_hanging(
    tmp_path: Path,
) -> None:
    config = base_config(None)
    config["store"]["url"] = f"sqlite:///{tmp_path / 'sendguard.db'}"
    config["upstream"]["path"] = str(tmp_path / "outbox")
    app = App(parse_config(yaml.safe_dump(config), "writer.yaml"))
    smtp = int(config["smtp"]["listen"].rsplit(":", 1)[1])
    web = int(config["http"]["listen"].rsplit(":", 1)[1])
    stop, started = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(app.run(stop, started))
    try:
        await asyncio.wait_for(started.wait(), 15)
        code, reply = await asyncio.to_thread(smtp_send, smtp, "before@example.org")
        assert code == 250, reply
        assert (await asyncio.to_thread(http, web, "GET", "/readyz"))[0] == 200

        (writer,) = [t for t in asyncio.all_tasks() if t.get_name() == "sqlite-group-commit"]
        writer.cancel()
        await asyncio.wait([writer])

        # each of these waited forever on a dead writer; the client timeouts are 10 s
        code, reply = await asyncio.to_thread(smtp_send, smtp, "after@example.org")
        assert code == 451, reply
        assert reply.startswith("4.3.0")
        status, body = await asyncio.to_thread(http, web, "GET", "/readyz")
        assert status == 503
        assert body["ready"] is False
        assert "writer stopped" in body["checks"]["store"]
        status, body = await asyncio.to_thread(
            http, web, "POST", "/v1/facts", {"key": "meeting:1:status", "value": "completed"}
        )
        assert status == 503
        assert body["error"]["code"] == "store_unavailable"
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
