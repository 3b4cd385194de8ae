"""TLS at the edges: implicit TLS listeners and upstreams, `require_tls`, several listeners in
one process, and the certificate replaced by a reload, with real clients and trustme certs."""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from sendguard.password import hash_password
from tests.e2e.test_cli_review import cli
from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, base_config, free_port, run_with_config
from tests.support.sink import Sink
from tests.support.tls import loopback_server_tls

pytestmark = [
    pytest.mark.e2e,
    # aiosmtpd (the sink, in this test process) leaks its socket when a TLS client goes away
    # during the handshake; the warning is about the sink, not about sendguard.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
Start = Callable[..., SendguardProcess]


def issue(ca: trustme.CA, directory: Path) -> dict[str, str]:
    """A certificate for 127.0.0.1 from `ca`, written as `smtp.tls` wants it."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    return {"cert": str(directory / "server.pem"), "key": str(directory / "server.key")}


def trusting(*cas: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        ca.configure_trust(context)
    return context


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def send_on(smtp: smtplib.SMTP, rcpt: str) -> str:
    smtp.mail("shop@example.com")
    assert smtp.rcpt(rcpt)[0] == 250
    code, reply = smtp.data(message())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def seen_fingerprint(port: int, context: ssl.SSLContext, implicit: bool) -> str:
    """SHA-256 of the certificate a new connection is shown."""
    if implicit:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10) as smtp:
            der = smtp.sock.getpeercert(binary_form=True)
    else:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=context)
            der = smtp.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def der_fingerprint(tls: dict[str, str]) -> str:
    pem = Path(tls["cert"]).read_text()
    first = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


def listeners_config(sink: Sink, tls: dict[str, str], **smtp: Any) -> dict[str, Any]:
    """Three listeners: relay for loopback (STARTTLS offered), submission with AUTH
    required, and implicit TLS with AUTH required."""
    config = base_config(sink.port)
    config["smtp"] = {
        "tls": tls,
        "auth_users": {"crm": hash_password("s3cret")},
        "listeners": [
            {"listen": f"127.0.0.1:{free_port()}"},
            {"listen": f"127.0.0.1:{free_port()}", "require_auth": True, "require_tls": True},
            {"listen": f"127.0.0.1:{free_port()}", "tls": "implicit", "require_auth": True},
        ],
        **smtp,
    }
    return config


def test_implicit_tls_listener_serves_smtp_ssl_and_offers_no_starttls(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    ca = trustme.CA()
    tls = issue(ca, tmp_path / "tls")
    listen = f"127.0.0.1:{free_port()}"
    config = base_config(sink.port)
    config["smtp"] = {"tls": tls, "listeners": [{"listen": listen, "tls": "implicit"}]}
    proc = sendguard(config)
    with smtplib.SMTP_SSL("127.0.0.1", port_of(listen), context=trusting(ca), timeout=10) as smtp:
        smtp.ehlo("test")
        assert not smtp.has_extn("starttls")
        msg_id = send_on(smtp, "implicit@example.org")
    got = sink.wait_for(1)
    proc.wait_states({"implicit@example.org": "sent"}, msg_id, timeout=20)
    assert "with ESMTPS" in got[0].message["Received"]

    # A client that starts in plain text gets nothing it can read as SMTP.
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        smtplib.SMTP("127.0.0.1", port_of(listen), timeout=5).ehlo()


def test_swaks_sends_over_implicit_tls(sendguard: Start, sink: Sink, tmp_path: Path) -> None:
    """A second, independent client (skipped where swaks is missing)."""
    if shutil.which("swaks") is None:
        if os.environ.get("CI"):
            pytest.fail("swaks is missing in CI: .ci/run should have installed it")
        pytest.skip("swaks is not installed (apt-get install swaks)")
    ca = trustme.CA()
    tls = issue(ca, tmp_path / "tls")
    listen = f"127.0.0.1:{free_port()}"
    config = base_config(sink.port)
    config["smtp"] = {"tls": tls, "listeners": [{"listen": listen, "tls": "implicit"}]}
    sendguard(config)
    out = subprocess.run(
        [
            *("swaks", "--server", listen, "--tlsc", "--from", "shop@example.com"),
            *("--to", "swaks@example.org", "--body", "hi"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "queued as" in out.stdout
    sink.wait_for(1)


def test_openssl_s_client_sends_over_implicit_tls(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    """OpenSSL's own client, verifying the certificate, speaks SMTP from the first byte."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca = trustme.CA()
    tls = issue(ca, tmp_path / "tls")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    listen = f"127.0.0.1:{free_port()}"
    config = base_config(sink.port)
    config["smtp"] = {"tls": tls, "listeners": [{"listen": listen, "tls": "implicit"}]}
    proc = sendguard(config)
    session = (
        "EHLO openssl\nMAIL FROM:<shop@example.com>\nRCPT TO:<openssl@example.org>\nDATA\n"
        "Subject: over implicit TLS\n\nhello\n.\nQUIT\n"
    )
    out = subprocess.run(
        [
            *(openssl, "s_client", "-connect", listen, "-CAfile", str(ca_file)),
            *("-verify_return_error", "-verify_ip", "127.0.0.1", "-crlf", "-quiet"),
        ],
        input=session,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "250 2.0.0 Ok: queued as" in out.stdout, out.stdout + out.stderr
    assert "STARTTLS" not in out.stdout
    proc.wait_states({"openssl@example.org": "sent"}, timeout=20)
    assert sink.wait_for(1)[0].message["Subject"] == "over implicit TLS"


def test_require_tls_refuses_mail_in_the_clear_even_from_allowed_networks(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    ca = trustme.CA()
    proc = sendguard(smtp={"tls": issue(ca, tmp_path / "tls"), "require_tls": True})
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as smtp:
        smtp.ehlo("test")
        code, reply = smtp.mail("shop@example.com")
        assert (code, reply.decode()) == (530, "5.7.0 Must issue a STARTTLS command first")
        assert smtp.docmd("RCPT TO:<x@example.org>")[0] == 503
        smtp.starttls(context=trusting(ca))
        smtp.ehlo("test")
        msg_id = send_on(smtp, "after-starttls@example.org")
    proc.wait_states({"after-starttls@example.org": "sent"}, msg_id, timeout=20)
    assert len(sink.wait_for(1)) == 1


def test_three_listeners_in_one_process(sendguard: Start, sink: Sink, tmp_path: Path) -> None:
    ca = trustme.CA()
    config = listeners_config(sink, issue(ca, tmp_path / "tls"))
    relay, submission, implicit = (port_of(x["listen"]) for x in config["smtp"]["listeners"])
    proc = sendguard(config)
    context = trusting(ca)

    # Relay port: loopback is an allowed network, no AUTH needed.
    with smtplib.SMTP("127.0.0.1", relay, timeout=10) as smtp:
        smtp.ehlo("test")
        assert smtp.has_extn("starttls")
        first = send_on(smtp, "relay@example.org")

    # Submission: TLS first, then AUTH, even from loopback.
    with smtplib.SMTP("127.0.0.1", submission, timeout=10) as smtp:
        smtp.ehlo("test")
        assert smtp.mail("shop@example.com")[0] == 530
        smtp.starttls(context=context)
        smtp.ehlo("test")
        code, reply = smtp.mail("shop@example.com")
        assert (code, reply.decode()) == (530, "5.7.0 Authentication required")
        smtp.rset()
        smtp.login("crm", "s3cret")
        second = send_on(smtp, "submission@example.org")

    # Implicit TLS: AUTH required too.
    with smtplib.SMTP_SSL("127.0.0.1", implicit, context=context, timeout=10) as smtp:
        smtp.ehlo("test")
        assert not smtp.has_extn("starttls")
        assert smtp.mail("shop@example.com")[0] == 530
        smtp.rset()
        smtp.login("crm", "s3cret")
        third = send_on(smtp, "implicit@example.org")

    for msg_id, rcpt in (
        (first, "relay@example.org"),
        (second, "submission@example.org"),
        (third, "implicit@example.org"),
    ):
        proc.wait_states({rcpt: "sent"}, msg_id, timeout=20)
    assert len(sink.wait_for(3)) == 3


def test_reload_replaces_the_certificate_for_new_connections(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    first_ca, second_ca = trustme.CA(), trustme.CA()
    tls = issue(first_ca, tmp_path / "tls")
    first = der_fingerprint(tls)
    config = listeners_config(sink, tls)
    relay, _, implicit = (port_of(x["listen"]) for x in config["smtp"]["listeners"])
    proc = sendguard(config)
    context = trusting(first_ca, second_ca)
    assert seen_fingerprint(implicit, context, implicit=True) == first
    assert seen_fingerprint(relay, context, implicit=False) == first

    # A session that began before the reload keeps working on its old certificate.
    before = smtplib.SMTP_SSL("127.0.0.1", implicit, context=context, timeout=10)
    before.ehlo("test")

    issue(second_ca, tmp_path / "tls")  # the renewed files, in place
    second = der_fingerprint(tls)
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    assert answer["tls_certificate"] == {"sha256": second, "reloaded": True}
    assert seen_fingerprint(implicit, context, implicit=True) == second
    assert seen_fingerprint(relay, context, implicit=False) == second
    before.login("crm", "s3cret")
    msg_id = send_on(before, "kept@example.org")
    before.quit()
    proc.wait_states({"kept@example.org": "sent"}, msg_id, timeout=20)

    # A broken certificate (the key of another one) is refused; the one in use stays.
    third_ca = trustme.CA()
    other = third_ca.issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(tls["key"])
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 400, answer
    assert answer["error"]["field"] == "smtp.tls.key"
    assert "not the private key" in answer["error"]["problems"][0]["message"]
    assert seen_fingerprint(implicit, context, implicit=True) == second

    # SIGHUP takes a third certificate.
    third_tls = issue(third_ca, tmp_path / "tls")
    third = der_fingerprint(third_tls)
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGHUP)
    context = trusting(first_ca, second_ca, third_ca)
    deadline = time.monotonic() + 20
    while seen_fingerprint(relay, context, implicit=False) != third:
        assert time.monotonic() < deadline, proc.log()[-3000:]
        time.sleep(0.1)
    assert seen_fingerprint(implicit, context, implicit=True) == third

    # New paths under smtp.tls apply at once too; nothing needs a restart.
    fourth_ca = trustme.CA()
    config["smtp"]["tls"] = issue(fourth_ca, tmp_path / "renewed")
    proc.config_path.write_text(yaml.safe_dump(config))
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    assert (answer["applied"], answer["restart_required"]) == (["smtp.tls"], [])
    fourth = der_fingerprint(config["smtp"]["tls"])
    assert answer["tls_certificate"] == {"sha256": fourth, "reloaded": True}
    assert seen_fingerprint(implicit, trusting(fourth_ca), implicit=True) == fourth

    # `sendguard reload` prints the fingerprint new connections see.
    done = cli(proc, "reload")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"smtp tls certificate: sha256 {fourth}" in done.stdout


@pytest.fixture
def implicit_sink(tmp_path: Path) -> Iterator[tuple[Sink, Path]]:
    """An aiosmtpd sink speaking TLS from the first byte."""
    ca_file = tmp_path / "upstream-ca.pem"
    context = loopback_server_tls(ca_file)
    sink = Sink(free_port(), ssl_context=context)
    sink.start()
    yield sink, ca_file
    sink.stop()
    # The sink leaks the socket of a refused handshake; collect it while this test's
    # filter still applies.
    gc.collect()


def test_implicit_tls_upstream_is_verified(
    sendguard: Start, implicit_sink: tuple[Sink, Path]
) -> None:
    sink, ca_file = implicit_sink
    config = base_config(sink.port)
    config["upstream"] = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": sink.port,
        "tls": "implicit",
        "tls_ca": str(ca_file),
    }
    config["upstreams"] = {
        "unverified": {"kind": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "implicit"}
    }
    config["routes"] = [{"campaign": "unverified", "upstream": "unverified"}]
    proc = sendguard(config)
    msg_id = send(proc, ["secure@example.org"], message())
    proc.wait_states({"secure@example.org": "sent"}, msg_id, timeout=20)
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["secure@example.org"]]

    # Without the CA that signed the upstream's certificate, nothing is sent to it.
    other = send(proc, ["other@example.org"], message("X-Sendguard-Campaign: unverified"))
    proc.wait_states({"other@example.org": "deferred"}, other, timeout=20)
    reason = proc.transitions("other@example.org")[-1][1]
    assert "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower()
    assert len(sink.received) == 1


def test_implicit_tls_upstream_without_verification(
    sendguard: Start, implicit_sink: tuple[Sink, Path]
) -> None:
    sink, _ = implicit_sink
    config = base_config(sink.port)
    config["upstream"] = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": sink.port,
        "tls": "implicit",
        "tls_verify": False,
    }
    proc = sendguard(config)
    msg_id = send(proc, ["anyway@example.org"], message())
    proc.wait_states({"anyway@example.org": "sent"}, msg_id, timeout=20)
    sink.wait_for(1)


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_listener_mistakes_are_config_errors_not_surprises_at_serve(
    command: str, tmp_path: Path
) -> None:
    tls = issue(trustme.CA(), tmp_path / "tls")
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(tls["key"])
    taken = f"127.0.0.1:{free_port()}"
    config = base_config(None)
    config["smtp"] = {
        "tls": tls,
        "listeners": [
            {"listen": taken, "allowed_networks": ["0.0.0.0/0"]},
            {"listen": f"127.0.0.1:{free_port()}", "tls": "implicit"},
        ],
    }
    config["http"]["listen"] = taken
    code, output = run_with_config(command, config, tmp_path)
    assert code == 2, output
    assert "3 problem(s)" in output
    assert "smtp.tls.key: " in output
    assert "is not the private key of the certificate" in output
    assert "smtp.listeners[0].allowed_networks: 0.0.0.0/0 lets anyone" in output
    assert f"http.listen: {taken} is also where smtp.listeners[0].listen" in output
    if command == "serve":
        assert "sendguard started" not in output


def test_serve_names_the_listener_whose_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = base_config(None)
        config["smtp"] = {
            "listeners": [
                {"listen": f"127.0.0.1:{free_port()}"},
                {"listen": f"127.0.0.1:{port}"},
            ]
        }
        code, output = run_with_config("serve", config, tmp_path)
    assert code == 1, output
    assert f"cannot listen on 127.0.0.1:{port} (smtp.listeners[1].listen)" in output
    assert "sendguard started" not in output
