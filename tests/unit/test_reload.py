"""Live reload's pieces: the config hash, what a change needs, the switchable upstream."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sendguard.config import Config, parse_config
from sendguard.delivery.upstream import Envelope
from sendguard.errors import ConfigError
from sendguard.reload import SwitchableUpstream, changed_sections, read_config


def test_the_hash_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("policies: [{plugin: schedule}]\n")
    assert read_config(path, {}).digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(tmp_path / "missing.yaml", {})


def test_live_and_restart_sections_are_told_apart() -> None:
    old = parse_config("{}", "old", {}).config
    new = parse_config(
        "smtp: {listen: '127.0.0.1:2626'}\n"
        "delivery: {workers: 3, min_backoff: 5s}\n"
        "headers: {campaign: [X-Campaign]}\n"
        "policies: [{plugin: schedule}]\n",
        "new",
        {},
    ).config
    applied, restart = changed_sections(old, new)
    assert applied == ["policies", "headers", "delivery"]
    assert restart == ["smtp.listen", "delivery.workers"]
    assert changed_sections(old, Config()) == ([], [])


class Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[str] = []
        self.closed = False

    async def send(self, envelope: Envelope, content: bytes) -> None:
        assert not self.closed
        self.sent.append(envelope.recipient)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


async def test_a_switched_upstream_is_closed_and_the_new_one_sends() -> None:
    old, new = Recording("outbox"), Recording("smtp")
    upstream = SwitchableUpstream(old)
    await upstream.send(Envelope("a@x.org", "b@x.org", "d1"), b"x")
    await upstream.switch(new)
    assert old.closed and upstream.name == "smtp"
    await upstream.send(Envelope("a@x.org", "c@x.org", "d2"), b"x")
    assert (old.sent, new.sent) == (["b@x.org"], ["c@x.org"])
    await upstream.close()
    assert new.closed
