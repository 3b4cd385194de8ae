"""Every HTTP route (read from the router, so a new one is covered the day it is added) refuses
a request without a valid credential — no token, a wrong one, an empty bearer, the right token
in the query string — with 401, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from sendguard.ingress.route import Auth
from sendguard.ingress.routes import ROUTES
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

PATH_VALUES = {
    "id": "01m8s4r0r5rhs47s202r9gq0ar",
    "name": "spring",
    "address": "ann@example.org",
    "domain": "mg.example",
    "secret": "x" * 24,
}


def protected_routes() -> list[tuple[str, str]]:
    """Every route of the table but the public ones, with test values in its path. The review
    page's routes are not in it: they sign people in with their own session
    (tests/e2e/test_review_page.py)."""
    found = set()
    for route in ROUTES:
        if route.auth is Auth.PUBLIC:
            continue
        path = route.path
        for key, value in PATH_VALUES.items():
            path = path.replace("{" + key + "}", value)
        assert "{" not in path, f"no test value for a parameter of {path}"
        found.add((route.method, path))
    return sorted(found)


SEND = {"from": "shop@example.com", "to": ["ann@example.org"], "subject": "s", "text": "t"}

CREDENTIALS: dict[str, tuple[dict[str, str], str]] = {
    "no token": ({}, ""),
    "wrong token": ({"Authorization": "Bearer wrong-" + TOKEN}, ""),
    "empty bearer": ({"Authorization": "Bearer "}, ""),
    "bare bearer": ({"Authorization": "Bearer"}, ""),
    "token as basic": ({"Authorization": f"Basic {TOKEN}"}, ""),
    "token in query": ({}, f"?token={TOKEN}&access_token={TOKEN}&api_key={TOKEN}&key={TOKEN}"),
}


def snapshot(proc: SendguardProcess) -> dict[str, Any]:
    """What a refused request could have changed, read with the real token."""
    seen = {}
    for path in ("/v1/deliveries", "/v1/suppressions", "/v1/audit", "/v1/campaigns", "/v1/pause"):
        status, answer = proc.call("GET", path)
        assert status == 200, (path, answer)
        seen[path] = answer
    return seen


def test_every_route_without_a_valid_credential_is_401_and_changes_nothing(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(
        http={"metrics_public": False},
        policies=[{"plugin": "human_hold", "options": {"hold_unapproved_campaigns": True}}],
    )
    status, answer = proc.call("POST", "/v1/messages", {**SEND, "campaign": "spring"})
    assert status == 202, answer
    routes = protected_routes()
    assert len(routes) > 30  # the router was read, not an empty list
    before = snapshot(proc)
    let_through = []
    for method, path in [*routes, ("GET", "/metrics")]:
        for label, (headers, query) in CREDENTIALS.items():
            body = json.dumps(SEND).encode() if method in ("POST", "DELETE") else None
            status, answer = proc.call(
                method,
                path + query,
                token=None,
                raw=body,
                headers={"Content-Type": "application/json", **headers},
            )
            if status != 401:
                let_through.append(f"{method} {path} ({label}): {status} {answer}")
    assert let_through == []
    assert snapshot(proc) == before
    assert sink.received == []
