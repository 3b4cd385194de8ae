"""The disk under var/ fills up (a small tmpfs): clients are told to try again (SMTP 4xx,
HTTP 503), nothing answered 250/202 is lost, and once space is back sendguard accepts again
without a restart."""

from __future__ import annotations

import contextlib
import smtplib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_send_path import message
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


@pytest.fixture
def small_var(tmp_path: Path) -> Iterator[Path]:
    """var/ of the server's directory on a 3 MB tmpfs (needs root and mount)."""
    var = tmp_path / "var"
    var.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(var)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for var/ (needs root): {done.stderr.strip()}")
    try:
        yield var
    finally:
        subprocess.run(["umount", "-l", str(var)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; return the filler file."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as out:
        while True:  # the last partial block
            out.write(b"\0")
    return filler


PADDING = (b"y" * 998 + b"\r\n") * 50  # 50 kB: SQLite's free pages run out soon


def try_send(proc: SendguardProcess, subject: str) -> tuple[int, str]:
    try:
        with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=20) as client:
            client.ehlo("test")
            client.mail("shop@example.com")
            client.rcpt(f"{subject}@example.org")
            code, reply = client.data(message(subject=subject) + PADDING)
            return code, reply.decode()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")


def test_disk_full_is_4xx_loses_nothing_and_recovers(
    small_var: Path, sendguard: Start, sink: Sink, figures: Callable[..., None]
) -> None:
    proc = sendguard()
    accepted = []
    # Sends in flight as the disk fills: the upstream has them, recording that must wait.
    sink.handler.delay = 1.5
    for i in range(5):
        code, reply = try_send(proc, f"before{i}")
        assert code == 250, reply
        accepted.append(f"before{i}")
    filler = fill(small_var)
    sink.handler.delay = 0
    answers = []
    for i in range(30):
        subject = f"full{i}"
        code, reply = try_send(proc, subject)
        answers.append(code)
        if code == 250:
            accepted.append(subject)
        else:
            assert 400 <= code < 500, (code, reply)
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["http@example.org"],
            "subject": "s",
            "text": "t" * 50000,
        },
    )
    assert status in (202, 503), (status, answer)
    assert any(400 <= code < 500 for code in answers), "the disk never looked full"
    assert proc.proc is not None and proc.proc.poll() is None, "sendguard died on a full disk"

    filler.unlink()
    for i in range(5):
        code, reply = try_send(proc, f"after{i}")
        assert code == 250, reply
        accepted.append(f"after{i}")
    # Settled soon after space is back: not `sending` until a lease ends (and sent twice).
    proc.wait_settled(timeout=30)
    received = [str(r.message["Subject"]) for r in sink.wait_for(len(accepted), timeout=60)]
    got = set(received)
    assert set(accepted) <= got
    assert len(received) == len(got), "sent twice"
    figures(
        answered_250=len(accepted),
        refused_4xx_while_full=sum(1 for c in answers if c != 250),
        lost=len(set(accepted) - got),
    )
