"""Secret fields read from `env:NAME` or `file:/path`; what cannot be read is a config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendguard.config import SmtpUpstreamOptions, parse_config
from sendguard.errors import ConfigError
from sendguard.password import hash_password
from sendguard.secret import redacted

UPSTREAM = "upstream: {kind: smtp, host: relay.example.com, username: u, password: '%s'}\n"


def problems(text: str, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", environ)
    return [str(p) for p in caught.value.problems]


def test_upstream_password_from_the_environment() -> None:
    settings = parse_config(UPSTREAM % "env:RELAY_PW", "t", {"RELAY_PW": "s3cret"})
    assert isinstance(settings.config.upstream, SmtpUpstreamOptions)
    assert settings.config.upstream.password == "s3cret"


def test_secret_files_lose_their_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "token").write_text("tok\r\n")
    (tmp_path / "url").write_text("sqlite:////data/sg.db\n")
    (tmp_path / "crm").write_text(hash_password("x") + "\n")
    text = (
        UPSTREAM % f"file:{tmp_path / 'pw'}"
        + f"http: {{api_tokens: ['file:{tmp_path / 'token'}']}}\n"
        + f"store: {{url: 'file:{tmp_path / 'url'}'}}\n"
        + f"smtp: {{auth_users: {{crm: 'file:{tmp_path / 'crm'}'}}}}\n"
    )
    settings = parse_config(text, "t", {})
    assert isinstance(settings.config.upstream, SmtpUpstreamOptions)
    assert settings.config.upstream.password == "from-file"
    assert settings.api_tokens == (("token-1", "tok"),)
    assert settings.config.store.url == "sqlite:////data/sg.db"
    assert settings.config.smtp.auth_users["crm"].startswith("scrypt$")


def test_an_unset_variable_names_the_field_and_the_variable() -> None:
    assert problems(UPSTREAM % "env:NOPE", {}) == [
        "upstream.password: environment variable NOPE is not set (or is empty)"
    ]
    found = problems("http: {api_tokens: [literal, 'env:MISSING_TOKEN']}\n", {})
    assert found == [
        "http.api_tokens[1]: environment variable MISSING_TOKEN is not set (or is empty)"
    ]


def test_an_unreadable_file_names_the_field_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    found = problems(
        f"store: {{url: 'file:{missing}'}}\nsmtp: {{auth_users: {{a: 'env:A'}}}}\n", {}
    )
    assert f"store.url: cannot read secret file {missing}: No such file or directory" in found
    assert "smtp.auth_users.a: environment variable A is not set (or is empty)" in found


def test_the_default_token_variable_may_be_unset() -> None:
    assert parse_config("", "empty.yaml", {}).api_tokens == ()
    assert parse_config("", "empty.yaml", {"SENDGUARD_API_TOKEN": "t"}).api_tokens == (
        ("token-1", "t"),
    )


def test_a_store_url_is_logged_without_its_password() -> None:
    assert redacted("postgresql://sg:s3cret@db.example:5432/x") == (
        "postgresql://sg:***@db.example:5432/x"
    )
    assert redacted("sqlite:///var/sendguard.db") == "sqlite:///var/sendguard.db"
    assert redacted("postgresql://sg@h/x") == "postgresql://sg@h/x"


def test_secret_problems_come_with_every_other_problem() -> None:
    """check-config lists everything at once: an unset token does not wait for a typo's fix."""
    found = problems(
        "http: {api_tokens: ['env:UNSET_TOKEN', {name: crm, token: 'env:UNSET_CRM'}], port: 1}\n"
        + UPSTREAM % "env:UNSET_PW"
        + "smtp: {listen: nowhere}\n"
        + "policies: [{plugin: schedule, options: {x: 1}}]\n",
        {},
    )
    assert "http.api_tokens[0]: environment variable UNSET_TOKEN is not set (or is empty)" in found
    assert (
        "http.api_tokens[1].token: environment variable UNSET_CRM is not set (or is empty)" in found
    )
    assert "upstream.password: environment variable UNSET_PW is not set (or is empty)" in found
    assert any(p.startswith("http.port: unknown key") for p in found), found
    assert any(p.startswith("smtp.listen:") for p in found), found
    assert any(p.startswith("policies[0].options.x:") for p in found), found


def test_an_unset_secret_is_not_reported_twice() -> None:
    found = problems("smtp: {auth_users: {a: 'env:A'}}\n", {})
    assert found == ["smtp.auth_users.a: environment variable A is not set (or is empty)"]
