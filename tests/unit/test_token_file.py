"""The API token file made at first start: one token, whoever starts first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sendguard.tokens import read_or_create_token

MAKE = "import sys; from pathlib import Path; from sendguard.tokens import read_or_create_token;"
MAKE += " print(read_or_create_token(Path(sys.argv[1]))[0])"


def test_workers_starting_together_end_up_with_the_one_token(tmp_path: Path) -> None:
    path = tmp_path / "var" / "api-token"
    starting = [
        subprocess.Popen([sys.executable, "-c", MAKE, str(path)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    tokens = {process.communicate(timeout=60)[0].decode().strip() for process in starting}
    assert tokens == {path.read_text().strip()}
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["api-token"]  # nothing left aside


def test_an_empty_file_gets_a_token_and_private_permissions(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    path.write_text("")
    path.chmod(0o644)
    token, created = read_or_create_token(path)
    assert created
    assert path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_or_create_token(path) == (token, False)


def test_a_worker_that_finds_the_file_made_meanwhile_takes_that_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api-token"

    def another_worker_was_first(nbytes: int) -> str:
        path.write_text("theirs\n")  # between this one's look and its write
        return "mine" * nbytes

    monkeypatch.setattr("sendguard.tokens.secrets.token_urlsafe", another_worker_was_first)
    assert read_or_create_token(path) == ("theirs", False)
    assert path.read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["api-token"]
