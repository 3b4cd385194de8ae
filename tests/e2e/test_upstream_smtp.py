"""The SMTP upstream against real servers: STARTTLS, AUTH, connection reuse, crash window."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink
from tests.support.tls import loopback_server_tls

pytestmark = [
    pytest.mark.e2e,
    # aiosmtpd (the sink, in this test process) leaks its socket when a client drops a
    # STARTTLS session; the warning is about the sink, not about sendguard.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
Start = Callable[..., SendguardProcess]


def check_login(
    server: object, session: object, envelope: object, mechanism: str, auth_data: object
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"relay",
        b"pa55",
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[tuple[Sink, Path]]:
    ca_file = tmp_path / "ca.pem"
    context = loopback_server_tls(ca_file)
    server = Sink(
        free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=check_login,
        auth_require_tls=True,
        auth_required=True,
    )
    server.start()
    yield server, ca_file
    server.stop()


def test_starttls_and_auth_to_the_upstream(sendguard: Start, tls_sink: tuple[Sink, Path]) -> None:
    sink, ca_file = tls_sink
    config = base_config(sink.port)
    config["upstream"].update(
        starttls="always", tls_ca=str(ca_file), username="relay", password="pa55"
    )
    proc = sendguard(config)
    msg_id = send(proc, ["secure@example.org"], message())
    sink.wait_for(1)
    proc.wait_states({"secure@example.org": "sent"}, msg_id)


def test_wrong_upstream_password_defers_and_says_why(
    sendguard: Start, tls_sink: tuple[Sink, Path]
) -> None:
    sink, ca_file = tls_sink
    config = base_config(sink.port)
    config["upstream"].update(
        starttls="always", tls_ca=str(ca_file), username="relay", password="wrong"
    )
    proc = sendguard(config)
    msg_id = send(proc, ["secure@example.org"], message())
    proc.wait_states({"secure@example.org": "deferred"}, msg_id)
    assert sink.received == []
    reason = proc.transitions("secure@example.org")[-1][1]
    assert "check upstream.username and upstream.password" in reason


def test_untrusted_upstream_certificate_is_not_used(
    sendguard: Start, tls_sink: tuple[Sink, Path]
) -> None:
    sink, _ = tls_sink
    config = base_config(sink.port)
    config["upstream"].update(starttls="always", username="relay", password="pa55")
    proc = sendguard(config)
    msg_id = send(proc, ["secure@example.org"], message())
    proc.wait_states({"secure@example.org": "deferred"}, msg_id)
    assert sink.received == []


def test_connections_to_the_upstream_are_reused(sendguard: Start, sink: Sink) -> None:
    config = base_config(sink.port)
    config["upstream"]["pool_size"] = 2
    # The pool is each worker's own (docs/operations.md, "Workers": N workers open up to N
    # times `upstream.pool_size`): at most 2 EHLOs with one process.
    proc = sendguard(config, serve_args=["--workers", "1"])
    rcpts = [f"r{i}@example.org" for i in range(20)]
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.sendmail("shop@example.com", rcpts, message())
    sink.wait_for(20)
    assert sink.handler.ehlos <= 2


def test_kill_9_while_sending_retries_after_restart(sendguard: Start, sink: Sink) -> None:
    sink.handler.delay = 2.0
    proc = sendguard()
    msg_id = send(proc, ["crash@example.org"], message())
    proc.wait_states({"crash@example.org": "sending"}, msg_id)
    proc.kill9()
    sink.handler.delay = 0.0
    proc.start()
    proc.wait_states({"crash@example.org": "sent"}, msg_id, timeout=20)
    # At-least-once: the interrupted attempt may also have arrived; never zero, at most two.
    time.sleep(0.5)
    assert 1 <= len(sink.received) <= 2
    assert [s for s, _ in proc.transitions("crash@example.org")].count("sending") == 2


def test_sigterm_lets_an_open_smtp_transaction_finish(sendguard: Start, sink: Sink) -> None:
    proc = sendguard()
    client = smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10)
    client.ehlo("test")
    client.mail("shop@example.com")
    assert client.rcpt("mid@example.org")[0] == 250
    assert proc.proc is not None
    proc.proc.terminate()
    time.sleep(0.3)
    code, reply = client.data(message())
    assert code == 250, reply
    client.close()
    assert proc.proc.wait(10) == 0
    assert len(sink.received) == 1
    proc.start()  # the state is read through the API of the next run
    assert proc.states() == {"mid@example.org": "sent"}
