"""The listeners' certificate: fingerprints as openssl prints them, and a reload that keeps the
certificate in use when the new files cannot be used."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from sendguard.tls import CertificateError, Certificates, fingerprint


def issue(directory: Path, name: str) -> tuple[Path, Path]:
    cert = trustme.CA().issue_cert(name)
    directory.mkdir(parents=True, exist_ok=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    return directory / "cert.pem", directory / "key.pem"


def test_fingerprint_is_what_openssl_prints(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, _ = issue(tmp_path, "mail.example.com")
    out = subprocess.run(
        [openssl, "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert fingerprint(cert) == out.split("=", 1)[1].strip().replace(":", "").lower()


def test_a_reload_swaps_the_context_and_a_broken_one_keeps_the_old(tmp_path: Path) -> None:
    cert, key = issue(tmp_path / "a", "a.example.com")
    certificates = Certificates(cert, key)
    first = certificates.fingerprint
    assert certificates.current is certificates.context

    new_cert, new_key = issue(tmp_path / "b", "b.example.com")
    assert certificates.reload(new_cert, new_key) == fingerprint(new_cert) != first
    assert certificates.current is not certificates.context

    in_use = certificates.current
    _, other_key = issue(tmp_path / "c", "c.example.com")
    with pytest.raises(CertificateError) as caught:
        certificates.reload(new_cert, other_key)
    assert caught.value.problem.path == "smtp.tls.key"
    assert caught.value.kept == fingerprint(new_cert)
    assert certificates.current is in_use
    assert certificates.fingerprint == fingerprint(new_cert)


def test_the_listening_context_hands_new_connections_the_newest(tmp_path: Path) -> None:
    """The SNI callback (called for every ClientHello) switches the connection's context."""
    cert, key = issue(tmp_path / "a", "a.example.com")
    certificates = Certificates(cert, key)
    new_cert, new_key = issue(tmp_path / "b", "b.example.com")
    certificates.reload(new_cert, new_key)

    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = certificates.context.wrap_bio(server_in, server_out, server_side=True)
    peer = client.wrap_bio(client_in, client_out)  # no server_hostname: no SNI sent
    for _ in range(10):
        for side in (peer, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    der = peer.getpeercert(binary_form=True)
    assert der is not None
    assert ssl.DER_cert_to_PEM_cert(der) in new_cert.read_text()
