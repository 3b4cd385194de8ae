"""Which configs can make an HTTPS request (sendguard/client_tls.py): only those import aiohttp
with its certificates loaded at once."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sendguard.client_tls import https_possible
from sendguard.config import parse_config

SMTP = {"upstream": {"kind": "smtp", "host": "127.0.0.1", "port": 2525}}


def possible(config: dict[str, Any]) -> bool:
    return https_possible(parse_config(yaml.safe_dump(config), "test"))


def test_an_smtp_or_outbox_relay_with_built_ins_makes_no_https_request() -> None:
    assert not possible({})  # the outbox
    assert not possible(SMTP)
    assert not possible({**SMTP, "policies": [{"plugin": p} for p in ("schedule", "frequency")]})
    assert not possible({**SMTP, "store": {"url": "postgresql://127.0.0.1/test"}})


@pytest.mark.parametrize(
    "config",
    [
        {"upstream": {"kind": "sendgrid", "api_key": "k"}},
        {
            **SMTP,
            "upstreams": {"news": {"kind": "postmark", "api_key": "k"}},
            "routes": [{"campaign": "news", "upstream": "news"}],
        },
        {**SMTP, "webhooks": [{"url": "https://hooks.example/x", "secret": "s" * 32}]},
        {**SMTP, "review": {"notify": {"webhook_url": "https://chat.example/hook"}}},
        {**SMTP, "policies": [{"plugin": "block_domain", "options": {"domains": ["x.example"]}}]},
    ],
    ids=["esp-upstream", "esp-route", "webhook", "review-notify-webhook", "third-party-policy"],
)
def test_what_can_speak_https_loads_the_certificates_at_once(config: dict[str, Any]) -> None:
    assert possible(config)
