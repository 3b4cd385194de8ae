from __future__ import annotations

from datetime import timedelta

import pytest

from sendguard.config import (
    OutboxUpstreamOptions,
    SmtpUpstreamOptions,
    load_config,
    parse_config,
    resolve_tokens,
)
from sendguard.errors import ConfigError, ConfigProblem
from sendguard.password import hash_password, verify_password


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    return [str(p) for p in caught.value.problems]


def test_embedded_default_is_valid() -> None:
    settings = load_config(None, environ={})
    config = settings.config
    assert config.smtp.listen == "127.0.0.1:2525"
    assert config.http.listen == "127.0.0.1:8025"
    assert config.store.url == "sqlite:///var/sendguard.db"
    assert isinstance(config.upstream, OutboxUpstreamOptions)
    assert [p.name for p in settings.policies] == [
        "schedule",
        "context",
        "frequency",
        "repetition",
        "fatigue",
        "human_hold",
    ]
    assert settings.api_tokens == ()


def test_empty_file_means_defaults() -> None:
    assert parse_config("", "empty.yaml").config.delivery.min_backoff == timedelta(minutes=1)


def test_smtp_upstream_and_durations() -> None:
    settings = parse_config(
        "upstream: {kind: smtp, host: mx.example.net, port: 587, starttls: always,"
        " username: u, password: p}\ndelivery: {max_lifetime: 2d, min_backoff: 30s}\n",
        "t.yaml",
    )
    assert isinstance(settings.config.upstream, SmtpUpstreamOptions)
    assert settings.config.upstream.port == 587
    assert settings.config.delivery.max_lifetime == timedelta(days=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smtp: {max_message_size: -1}", "smtp.max_message_size: Input should be greater than 0"),
        ("smtp: {allowed_networks: [nonsense]}", "smtp.allowed_networks[0]:"),
        ("smtp: {tls: {cert: a.pem}}", "smtp.tls: set both cert and key"),
        (
            "smtp: {auth_users: {crm: plaintext}}",
            "smtp.auth_users: the password of 'crm' must be a hash",
        ),
        (
            "store: {url: 'mysql://x'}",
            "store.url: no store backend for the scheme 'mysql' is installed; installed schemes: ",
        ),
        ("store: {url: 'var/x.db'}", "store.url: no store backend for a URL without a scheme"),
        ("store: {url: 'sqlite://x.db'}", "store.url: 'sqlite://x.db' must look like sqlite:///"),
        ("upstream: {kind: owl}", "upstream.kind: no upstream kind 'owl' is installed"),
        (
            "upstream: {kind: smtp, host: h, username: u}",
            "upstream: set both username and password",
        ),
        (
            "delivery: {min_backoff: 2h, max_backoff: 1h}",
            "delivery: min_backoff must not be larger",
        ),
        ("delivery: {workers: 0}", "delivery.workers: Input should be greater than 0"),
        (
            "policies: [{plugin: schedule, mode: loud}]",
            "policies[0].mode: Input should be 'enforce' or 'shadow'",
        ),
        (
            "policies: [{plugin: schedule}, {plugin: schedule}]",
            "policies[1].plugin: 'schedule' is configured twice",
        ),
        (
            "policies: [{plugin: schedule, colour: red}]",
            "policies[0].colour: unknown key; allowed: budget, mode, on_error, options, plugin",
        ),
        ("headers: {campaign: X-Campaign}", "headers.campaign: Input should be a valid list"),
        ("- a list", "must be a mapping"),
        ("smtp: [", "not valid YAML"),
    ],
)
def test_errors_name_the_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


def test_all_errors_are_reported_together() -> None:
    found = problems("smtp: {listen: x}\npolicies: [{plugin: schedule, options: {x: 1}}]\n")
    assert len(found) == 2


def test_api_tokens_from_environment() -> None:
    found: list[ConfigProblem] = []
    tokens = ["env:TOKEN", "literal", "env:SENDGUARD_API_TOKEN", ""]
    assert resolve_tokens(tokens, {"TOKEN": "t1"}, found) == (
        ("token-1", "t1"),
        ("token-2", "literal"),
    )
    assert found == []


def test_password_hashes() -> None:
    stored = hash_password("s3cret")
    assert verify_password("s3cret", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("s3cret", "scrypt$1$1$1$bad$bad")
    assert not verify_password("s3cret", "plain")
