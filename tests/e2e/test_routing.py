"""Routing end to end: named upstreams, routes by class and sender domain, readiness of
every upstream in use, a reload that changes the routes, and check-config's problems."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_send_path import message, send
from tests.support.process import (
    SendguardProcess,
    base_config,
    free_port,
    run_with_config,
)
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


@pytest.fixture
def other_sink() -> Iterator[Sink]:
    server = Sink(free_port())
    server.start()
    yield server
    server.stop()


def smtp_to(sink: Sink) -> dict[str, Any]:
    return {"kind": "smtp", "host": "127.0.0.1", "port": sink.port, "starttls": "never"}


def recipients(sink: Sink) -> list[str]:
    return sorted(r for received in sink.received for r in received.rcpt_tos)


def test_transactional_mail_and_marketing_leave_through_different_upstreams(
    sendguard: Start, sink: Sink, other_sink: Sink
) -> None:
    config = base_config(sink.port)
    del config["upstream"]  # a route without conditions is the default
    config["upstreams"] = {"receipts": smtp_to(sink), "bulk": smtp_to(other_sink)}
    config["routes"] = [{"class": "transactional", "upstream": "receipts"}, {"upstream": "bulk"}]
    proc = sendguard(config)

    receipt = send(proc, ["ann@example.org"], message("X-Sendguard-Class: transactional"))
    offer = send(proc, ["bob@example.org"], message("X-Sendguard-Campaign: spring"))
    proc.wait_states({"ann@example.org": "sent"}, receipt)
    proc.wait_states({"bob@example.org": "sent"}, offer)

    assert recipients(sink) == ["ann@example.org"]
    assert recipients(other_sink) == ["bob@example.org"]


def test_a_route_by_sender_domain_and_the_default_upstream(
    sendguard: Start, sink: Sink, other_sink: Sink
) -> None:
    config = base_config(sink.port)  # `upstream:` stays the default
    config["upstreams"] = {"billing": smtp_to(other_sink)}
    config["routes"] = [{"sender_domain": "Billing.Example.com", "upstream": "billing"}]
    proc = sendguard(config)

    invoice = send(proc, ["ann@example.org"], message(), sender="invoices@billing.example.com")
    news = send(proc, ["bob@example.org"], message(), sender="news@example.com")
    proc.wait_states({"ann@example.org": "sent"}, invoice)
    proc.wait_states({"bob@example.org": "sent"}, news)

    assert recipients(other_sink) == ["ann@example.org"]
    assert recipients(sink) == ["bob@example.org"]


def test_readiness_names_a_routed_upstream_that_is_down(sendguard: Start, sink: Sink) -> None:
    config = base_config(sink.port)
    down = {"kind": "smtp", "host": "127.0.0.1", "port": free_port(), "starttls": "never"}
    config["upstreams"] = {"bulk": down}
    config["routes"] = [{"class": "marketing", "upstream": "bulk"}]
    proc = sendguard(config)

    status, body = proc.http_get("/readyz")
    assert status == 503, body
    checks = json.loads(body)["checks"]
    assert checks["store"] == "ok"
    assert checks["upstream"].startswith("bulk: "), checks


def test_a_reload_changes_the_routes_for_the_next_delivery(
    sendguard: Start, sink: Sink, other_sink: Sink
) -> None:
    proc = sendguard()
    first = send(proc, ["ann@example.org"], message("X-Sendguard-Campaign: spring"))
    proc.wait_states({"ann@example.org": "sent"}, first)

    proc.config["upstreams"] = {"bulk": smtp_to(other_sink)}
    proc.config["routes"] = [{"campaign": "spring", "upstream": "bulk"}]
    proc.config_path.write_text(yaml.safe_dump(proc.config))
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    assert set(answer["applied"]) == {"upstreams", "routes"}

    second = send(proc, ["bob@example.org"], message("X-Sendguard-Campaign: spring"))
    other = send(proc, ["cyd@example.org"], message("X-Sendguard-Campaign: autumn"))
    proc.wait_states({"bob@example.org": "sent"}, second)
    proc.wait_states({"cyd@example.org": "sent"}, other)
    assert recipients(other_sink) == ["bob@example.org"]
    assert recipients(sink) == ["ann@example.org", "cyd@example.org"]


def test_check_config_names_the_bad_routes(tmp_path: Path) -> None:
    config = base_config(None)
    config["upstreams"] = {"bulk": {"kind": "outbox", "path": "var/bulk"}}
    config["routes"] = [
        {"campaign": "spring", "upstream": "bulk"},
        {"class": "marketing", "upstream": "newsletter"},
        {"campaign": "spring", "class": "marketing", "upstream": "bulk"},
        {"sender_domain": "news@example.com", "upstream": "bulk"},
    ]
    code, output = run_with_config("check-config", config, tmp_path)
    assert code == 2
    assert "routes[1].upstream" in output and "'newsletter'" in output, output
    assert "routes[2]" in output and "never match" in output, output
    assert "routes[3].sender_domain" in output, output
