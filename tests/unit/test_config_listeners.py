"""Listeners in the config: the one-listener form and `smtp.listeners`, what each inherits,
and the mistakes check-config names (TLS files, open relay, clashes, missing prerequisites)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from sendguard.config import SmtpUpstreamOptions, parse_config
from sendguard.errors import ConfigError
from sendguard.password import hash_password

USERS = {"crm": hash_password("pw")}


def problems(config: dict[str, Any]) -> dict[str, str]:
    """field -> message of every problem of `config`."""
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(config), "test.yaml", environ={})
    return {p.path: p.message for p in caught.value.problems}


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, str]:
    cert = trustme.CA().issue_cert("mail.example.com")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    return {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}


def test_the_single_listener_form_is_one_listener() -> None:
    config = parse_config("smtp: {listen: '127.0.0.1:2626'}", "t.yaml", environ={}).config
    [listener] = config.smtp.listeners_in_use()
    assert (listener.listen, listener.tls, listener.require_auth, listener.require_tls) == (
        "127.0.0.1:2626",
        "none",
        False,
        False,
    )
    assert listener.field("allowed_networks") == "smtp.allowed_networks"


def test_listeners_inherit_what_they_do_not_set(tls: dict[str, str]) -> None:
    smtp = {
        "tls": tls,
        "auth_users": USERS,
        "allowed_networks": ["10.0.0.0/8"],
        "require_tls": True,
        "listeners": [
            {"listen": "0.0.0.0:25"},
            {"listen": "0.0.0.0:587", "require_auth": True, "allowed_networks": []},
            {"listen": "0.0.0.0:465", "tls": "implicit", "require_tls": False},
        ],
    }
    config = parse_config(yaml.safe_dump({"smtp": smtp}), "t.yaml", environ={}).config
    relay, submission, implicit = config.smtp.listeners_in_use()
    assert relay.tls == "starttls"
    assert [str(n) for n in relay.allowed_networks] == ["10.0.0.0/8"]
    assert relay.require_tls
    assert submission.require_auth
    assert submission.allowed_networks == []
    assert submission.field("allowed_networks") == "smtp.listeners[1].allowed_networks"
    assert submission.field("require_tls") == "smtp.require_tls"
    assert (implicit.tls, implicit.require_tls) == ("implicit", False)


def test_listen_and_listeners_together_are_an_error() -> None:
    found = problems({"smtp": {"listen": "127.0.0.1:25", "listeners": [{"listen": "[::1]:25"}]}})
    assert "set either listen" in found["smtp"]


def test_unknown_tls_mode_names_the_choices() -> None:
    found = problems({"smtp": {"listeners": [{"listen": "127.0.0.1:465", "tls": "ssl"}]}})
    message = found["smtp.listeners[0].tls"]
    assert "'none'" in message
    assert "'implicit'" in message


def test_missing_and_unreadable_tls_files(tmp_path: Path, tls: dict[str, str]) -> None:
    missing = problems({"smtp": {"tls": {"cert": str(tmp_path / "nope.pem"), "key": tls["key"]}}})
    assert "No such file" in found_one(missing, "smtp.tls.cert")
    # A directory cannot be read as a file, by root either (chmod 0 would not stop root).
    unreadable = problems({"smtp": {"tls": {"cert": tls["cert"], "key": str(tmp_path)}}})
    message = found_one(unreadable, "smtp.tls.key")
    assert "cannot read" in message
    assert "Is a directory" in message


def found_one(found: dict[str, str], field: str) -> str:
    assert list(found) == [field], found
    return found[field]


def test_a_key_that_does_not_match_the_certificate(tmp_path: Path, tls: dict[str, str]) -> None:
    other = trustme.CA().issue_cert("other.example.com")
    other.private_key_pem.write_to_path(tls["key"])
    message = found_one(problems({"smtp": {"tls": tls}}), "smtp.tls.key")
    assert "is not the private key of the certificate" in message


def test_a_file_that_is_not_pem(tmp_path: Path, tls: dict[str, str]) -> None:
    Path(tls["cert"]).write_text("not a certificate\n")
    message = found_one(problems({"smtp": {"tls": tls}}), "smtp.tls.cert")
    assert "PEM" in message


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_an_open_relay_is_an_error(everyone: str) -> None:
    found = problems({"smtp": {"allowed_networks": ["10.0.0.0/8", everyone]}})
    message = found_one(found, "smtp.allowed_networks")
    assert "open relay" in message
    assert "require_auth" in message


def test_everyone_with_auth_required_is_no_open_relay() -> None:
    config = {"smtp": {"allowed_networks": ["0.0.0.0/0"], "require_auth": True}}
    config["smtp"]["auth_users"] = USERS
    parse_config(yaml.safe_dump(config), "t.yaml", environ={})


def test_an_open_relay_on_one_listener_names_that_listener() -> None:
    smtp = {
        "auth_users": USERS,
        "listeners": [
            {"listen": "0.0.0.0:587", "require_auth": True, "allowed_networks": ["0.0.0.0/0"]},
            {"listen": "0.0.0.0:25", "allowed_networks": ["::/0"]},
        ],
    }
    found = problems({"smtp": smtp})
    assert "open relay" in found_one(found, "smtp.listeners[1].allowed_networks")


@pytest.mark.parametrize(
    ("listeners", "http", "field"),
    [
        (["127.0.0.1:2525", "127.0.0.1:2525"], "127.0.0.1:8025", "smtp.listeners[1].listen"),
        (["0.0.0.0:25", "192.0.2.1:25"], "127.0.0.1:8025", "smtp.listeners[1].listen"),
        (["[::]:25", "127.0.0.1:25"], "127.0.0.1:8025", "smtp.listeners[1].listen"),
        (["127.0.0.1:2525"], "127.0.0.1:2525", "http.listen"),
        (["[::1]:2525", "[0:0:0:0:0:0:0:1]:2525"], "127.0.0.1:8025", "smtp.listeners[1].listen"),
    ],
)
def test_two_listeners_on_one_address_and_port(listeners: list[str], http: str, field: str) -> None:
    config = {
        "smtp": {"listeners": [{"listen": listen} for listen in listeners]},
        "http": {"listen": http},
    }
    assert "give each listener its own port" in found_one(problems(config), field)


def test_different_addresses_or_ports_do_not_clash() -> None:
    smtp = {"listeners": [{"listen": "127.0.0.1:25"}, {"listen": "[::1]:25"}]}
    config = {"smtp": smtp, "http": {"listen": "127.0.0.2:25"}}
    parse_config(yaml.safe_dump(config), "t.yaml", environ={})


def test_tls_modes_need_a_certificate_and_require_tls_needs_tls() -> None:
    smtp = {
        "require_tls": True,
        "listeners": [{"listen": "127.0.0.1:465", "tls": "implicit", "require_tls": False}],
    }
    assert "smtp.tls.cert" in found_one(problems({"smtp": smtp}), "smtp.listeners[0].tls")
    found = problems({"smtp": {"require_tls": True}})
    assert "refuse every client" in found_one(found, "smtp.require_tls")


def test_require_auth_needs_users() -> None:
    found = problems({"smtp": {"listeners": [{"listen": "127.0.0.1:587", "require_auth": True}]}})
    assert "smtp.auth_users" in found_one(found, "smtp.listeners[0].require_auth")


def test_implicit_tls_upstream_defaults_to_port_465() -> None:
    implicit = SmtpUpstreamOptions.model_validate(
        {"kind": "smtp", "host": "mx.example", "tls": "implicit"}
    )
    assert implicit.port == 465
    legacy = SmtpUpstreamOptions.model_validate(
        {"kind": "smtp", "host": "mx.example", "starttls": "always"}
    )
    assert (legacy.port, legacy.tls) == (25, "starttls")


def test_implicit_tls_upstream_with_starttls_is_an_error() -> None:
    upstream = {"kind": "smtp", "host": "mx", "tls": "implicit", "starttls": "always"}
    assert "remove starttls" in found_one(problems({"upstream": upstream}), "upstream")


def test_an_unreadable_upstream_ca_bundle(tmp_path: Path) -> None:
    upstream = {"kind": "smtp", "host": "mx", "tls_ca": str(tmp_path / "missing.pem")}
    found = problems({"upstreams": {"billing": upstream}, "routes": []})
    assert "cannot read" in found_one(found, "upstreams.billing.tls_ca")
