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


def metric(proc: SendguardProcess, series: str) -> float:
    """The value of one series of /metrics (0 when it is not exposed)."""
    status, text = proc.call("GET", "/metrics", token=None)
    assert status == 200, text
    for line in str(text).splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


REFUSED_SMTP = 'sendguard_messages_refused_total{ingress="smtp",reason="disk_full"}'


def test_a_full_disk_shows_in_readyz_and_the_metrics_until_space_is_back(
    small_var: Path, sendguard: Start
) -> None:
    proc = sendguard()
    code, reply = try_send(proc, "before")
    assert code == 250, reply
    assert proc.call("GET", "/readyz", token=None)[0] == 200
    assert metric(proc, "sendguard_store_up") == 1

    filler = fill(small_var)
    refused = 0
    for i in range(10):  # SQLite's free pages run out within a few 50 kB messages
        code, reply = try_send(proc, f"full{i}")
        if code == 451:
            refused += 1
            break
        assert code == 250, reply
    assert refused, "the disk never looked full"
    assert reply.startswith("4.3.0"), reply

    status, body = proc.call("GET", "/readyz", token=None)
    assert status == 503, body
    assert body["ready"] is False
    assert "is full" in body["checks"]["store"], body
    assert str(proc.db_path) in body["checks"]["store"], body
    assert "free space" in body["checks"]["store"], body
    assert metric(proc, "sendguard_store_up") == 0
    assert metric(proc, REFUSED_SMTP) >= 1
    # liveness is not readiness: an orchestrator must not restart a relay for a full disk
    assert proc.call("GET", "/healthz", token=None)[0] == 200

    filler.unlink()
    code, reply = try_send(proc, "after")
    assert code == 250, reply
    status, body = proc.call("GET", "/readyz", token=None)
    assert status == 200, body
    assert metric(proc, "sendguard_store_up") == 1


def test_every_worker_reads_not_ready_while_the_disk_is_full(
    small_var: Path, sendguard: Start
) -> None:
    # Two workers share the file system, but only the one whose commit failed knew: a load
    # balancer's probe answered 200 or 503 by which worker the kernel gave it to (seen in a
    # `make test-workers` run). Every worker now reads the disk itself.
    proc = sendguard(serve_args=["--workers", "2"])
    assert len(proc.worker_pids()) == 2
    filler = fill(small_var)
    for i in range(10):
        code, _ = try_send(proc, f"full{i}")
        if code == 451:
            break
    answers = [proc.call("GET", "/readyz", token=None) for _ in range(12)]
    assert all(status == 503 for status, _ in answers), answers
    assert all("is full" in body["checks"]["store"] for _, body in answers), answers
    assert metric(proc, "sendguard_store_up") == 0

    filler.unlink()
    answers = [proc.call("GET", "/readyz", token=None) for _ in range(12)]
    assert all(status == 200 for status, _ in answers), answers
    code, reply = try_send(proc, "after")
    assert code == 250, reply
