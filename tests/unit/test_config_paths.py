"""The config's path registry is derived from its models, and one helper words pydantic
errors for both `check-config` and the HTTP API."""

from __future__ import annotations

import pytest
from pydantic import Field

from sendguard.config import (
    Config,
    EspUpstreamOptions,
    HttpOptions,
    NamedTokenOptions,
    PluginUpstreamOptions,
    PolicyEntryOptions,
    PostmarkEspOptions,
    ReviewNotifyOptions,
    ReviewUserOptions,
    SmtpUpstreamOptions,
    TlsOptions,
    WebhookOptions,
    model_at,
    parse_config,
)
from sendguard.errors import ConfigError
from sendguard.ingress.payloads import BadRequest, SendPayload, validate_as
from sendguard.validation import Strict


@pytest.mark.parametrize(
    ("loc", "model"),
    [
        ([], Config),
        (["http"], HttpOptions),
        (["smtp", "tls"], TlsOptions),
        (["policies", 3], PolicyEntryOptions),
        (["upstream", "smtp"], SmtpUpstreamOptions),
        (["upstream", "esp"], EspUpstreamOptions),
        (["upstream", "plugin"], PluginUpstreamOptions),
        (["esp", "postmark"], PostmarkEspOptions),
        (["review", "notify"], ReviewNotifyOptions),
        (["webhooks", 1], WebhookOptions),
        (["http", "api_tokens", 0, "named"], NamedTokenOptions),
        (["review", "users", "ana"], ReviewUserOptions),
        (["policies", 0, "options"], None),
    ],
)
def test_the_model_at_a_path_comes_from_the_annotations(
    loc: list[int | str], model: type | None
) -> None:
    assert model_at(Config, loc) is model


def test_a_new_section_needs_no_registry_entry() -> None:
    class AuditOptions(Strict):
        keep: int = 1

    class Extended(Config):
        audit: AuditOptions = Field(default_factory=AuditOptions)

    assert model_at(Extended, ["audit"]) is AuditOptions


def test_errors_in_a_tagged_upstream_name_its_keys_without_the_tag() -> None:
    text = "upstream: {kind: postmark, api_key: k, domian: x}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test")
    [problem] = raised.value.problems
    assert problem.path == "upstream.domian"
    assert problem.message.startswith("unknown key; allowed: api_key, base_url, domain")


def test_unknown_keys_name_what_is_allowed_everywhere() -> None:
    text = "review:\n  users:\n    ana: {password_hash: x, rol: viewer}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test")
    [problem] = [p for p in raised.value.problems if p.path == "review.users.ana.rol"]
    assert problem.message == "unknown key; allowed: password_hash, role"


def test_payloads_and_config_word_errors_alike() -> None:
    with pytest.raises(BadRequest) as raised:
        validate_as(SendPayload, {"from": "a@example.com", "campagin": "x"})
    assert raised.value.field == "campagin"
    assert str(raised.value).startswith("campagin: unknown field; allowed: ")
    with pytest.raises(BadRequest) as missing:
        validate_as(SendPayload, {}, "[2]")
    assert str(missing.value) == "[2].from: required field is missing"
