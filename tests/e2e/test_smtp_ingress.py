"""What SMTP clients see: refusals for bad input, limits, relay control, AUTH and STARTTLS."""

from __future__ import annotations

import os
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from sendguard.password import hash_password
from tests.e2e.test_send_path import message
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]


def client(proc: SendguardProcess) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10)
    smtp.ehlo("test")
    return smtp


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("no-at-sign", 553),
        ("two@@example.org", 553),
        ("a" * 65 + "@example.org", 553),
        ("x@" + "d" * 64 + ".example", 553),
        ("x@exa mple.org", 553),
        ("x@-bad-.org", 553),
        ("x@[127.0.0.1]", 553),
        ("x\x00y@example.org", 501),
    ],
)
def test_bad_recipient_gets_an_smtp_error_and_the_server_carries_on(
    sendguard: Start, sink: Sink, address: str, code: int
) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        got, reply = smtp.docmd(f"RCPT TO:<{address}>")
        assert got in (code, 501, 553), reply
        assert got >= 500
        # The session survives: a good recipient is still accepted on the same connection.
        assert smtp.rcpt("fine@example.org")[0] == 250
    assert proc.proc is not None and proc.proc.poll() is None


def test_crlf_injection_in_recipient_is_refused_not_rewritten(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        smtp.send(b"RCPT TO:<a@example.org\rDATA@example.org>\r\n")
        code, _ = smtp.getreply()
        assert code >= 500
    assert proc.states() == {}


def test_more_than_max_recipients_gets_452(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"max_recipients": 3})
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        for i in range(3):
            assert smtp.rcpt(f"r{i}@example.org")[0] == 250
        code, reply = smtp.rcpt("r3@example.org")
        assert code == 452
        assert reply.startswith(b"4.5.3")
        assert smtp.data(message())[0] == 250
    sink.wait_for(3)


def test_message_over_max_size_gets_552(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"max_message_size": 2000})
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        smtp.rcpt("big@example.org")
        code, reply = smtp.data(message() + (b"x" * 70 + b"\r\n") * 50 + b"y" * 80 + b"\r\n")
    assert code == 552
    assert reply.startswith(b"5.3.4")
    with client(proc) as smtp:
        code, reply = smtp.mail("shop@example.com", options=["SIZE=5000"])
    assert code == 552
    assert proc.states() == {}


def test_malformed_sendguard_header_is_refused_with_the_field(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        smtp.rcpt("a@example.org")
        code, reply = smtp.data(message("X-Sendguard-Not-Before: next tuesday"))
    assert code == 550
    assert b"X-Sendguard-Not-Before" in reply
    assert proc.states() == {}


def test_relay_from_outside_allowed_networks_is_refused(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(smtp={"allowed_networks": ["192.0.2.0/24"]})
    with client(proc) as smtp:
        smtp.mail("shop@example.com")
        code, reply = smtp.rcpt("a@example.org")
    assert code == 554
    assert reply.startswith(b"5.7.1")
    assert proc.states() == {}


def test_auth_lets_a_client_outside_allowed_networks_relay(sendguard: Start, sink: Sink) -> None:
    users = {"crm": hash_password("s3cret")}
    proc = sendguard(smtp={"allowed_networks": ["192.0.2.0/24"], "auth_users": users})
    with client(proc) as smtp:
        assert smtp.has_extn("auth")
        smtp.mail("shop@example.com")
        assert smtp.rcpt("a@example.org")[0] == 530
        smtp.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("crm", "wrong")
        smtp.login("crm", "s3cret")
        smtp.mail("shop@example.com")
        assert smtp.rcpt("a@example.org")[0] == 250
        assert smtp.data(message())[0] == 250
    sink.wait_for(1)


def test_no_auth_offered_without_users(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    with client(proc) as smtp:
        assert not smtp.has_extn("auth")


def test_starttls_and_auth_over_tls(sendguard: Start, sink: Sink, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    tls = {"cert": str(tmp_path / "server.pem"), "key": str(tmp_path / "server.key")}
    users = {"crm": hash_password("s3cret")}
    proc = sendguard(smtp={"tls": tls, "auth_users": users, "allowed_networks": ["192.0.2.0/24"]})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with client(proc) as smtp:
        assert smtp.has_extn("starttls")
        smtp.starttls(context=context)
        smtp.ehlo("test")
        smtp.login("crm", "s3cret")
        msg_id = send_on(smtp, "tls@example.org")
    sink.wait_for(1)
    proc.wait_states({"tls@example.org": "sent"}, msg_id)


def send_on(smtp: smtplib.SMTP, rcpt: str) -> str:
    smtp.mail("shop@example.com")
    assert smtp.rcpt(rcpt)[0] == 250
    code, reply = smtp.data(message())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


@pytest.mark.parametrize("pipeline", [False, True], ids=["lockstep", "pipelined"])
def test_swaks_can_send(sendguard: Start, sink: Sink, pipeline: bool) -> None:
    """A second, independent SMTP client implementation (skipped where swaks is missing);
    with `--pipeline` it sends MAIL, RCPT and DATA as one group (RFC 2920)."""
    if shutil.which("swaks") is None:
        if os.environ.get("CI"):
            pytest.fail("swaks is missing in CI: .ci/run should have installed it")
        pytest.skip("swaks is not installed (apt-get install swaks)")
    proc = sendguard()
    out = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{proc.smtp_port}",
            "--from",
            "shop@example.com",
            "--to",
            "swaks@example.org",
            "--header",
            "X-Sendguard-Campaign: swaks",
            "--body",
            "hello from swaks",
            *(["--pipeline"] if pipeline else []),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "queued as" in out.stdout
    if pipeline:  # the group went out before any of its replies came back
        transcript = out.stdout
        assert transcript.index(" -> DATA") < transcript.index("<-  250 2.1.0"), transcript
    got = sink.wait_for(1)
    assert b"X-Sendguard" not in got[0].content
