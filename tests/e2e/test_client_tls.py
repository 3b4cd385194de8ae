"""sendguard's HTTPS clients verify their peers with the system's CA certificates, whether the
server started able to speak HTTPS or was reloaded into it (sendguard/client_tls.py: a server
whose config can make no HTTPS request imports aiohttp without loading the certificates).

The fake ESP serves HTTPS with a certificate of a trustme CA; the server trusts that CA through
SSL_CERT_FILE, as an operator's system bundle would.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
import yaml

from tests.e2e.test_http_api import send_json
from tests.support.fake_esp import FakeEsp, upstream_config
from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink
from tests.support.tls import loopback_server_tls

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


@pytest.fixture
def tls_esp(tmp_path: Path) -> Iterator[tuple[FakeEsp, Path]]:
    """A fake ESP on HTTPS, and the file of the CA that signed its certificate."""
    ca_file = tmp_path / "ca.pem"
    context = loopback_server_tls(ca_file)
    fake = FakeEsp(free_port(), ssl_context=context)
    fake.start()
    yield fake, ca_file
    fake.stop()


def https_upstream(fake: FakeEsp) -> dict[str, object]:
    upstream = upstream_config(fake, "sendgrid")
    upstream["base_url"] = f"https://127.0.0.1:{fake.port}"
    return upstream


def reload_to(proc: SendguardProcess, config: dict[str, object]) -> None:
    proc.config = config
    proc.config_path.write_text(yaml.safe_dump(config))
    status, answer = proc.call("POST", "/v1/admin/reload", {})
    assert status == 200, answer
    assert "upstream" in answer["applied"], answer


def test_an_https_upstream_configured_at_start_is_verified(
    sendguard: Start, tls_esp: tuple[FakeEsp, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, ca_file = tls_esp
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    config = base_config(None)
    config["upstream"] = https_upstream(fake)
    proc = sendguard(config)
    send_json(proc, to=["ana@example.org"], subject="Hello", text="Hi Ana")
    proc.wait_states({"ana@example.org": "sent"})
    assert fake.wait_for(1)[0].recipient == "ana@example.org"


def test_a_reload_from_smtp_to_an_https_upstream_loads_the_certificates(
    sendguard: Start, sink: Sink, tls_esp: tuple[FakeEsp, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started SMTP-only: aiohttp was imported without the certificates.
    fake, ca_file = tls_esp
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    proc = sendguard()
    send_json(proc, to=["ann@example.org"], subject="Hello", text="Hi Ann")
    proc.wait_states({"ann@example.org": "sent"})
    sink.wait_for(1)

    config = copy.deepcopy(proc.config)
    config["upstream"] = https_upstream(fake)
    reload_to(proc, config)
    send_json(proc, to=["bo@example.org"], subject="Hello", text="Hi Bo")
    proc.wait_states({"bo@example.org": "sent"})
    assert fake.wait_for(1)[0].recipient == "bo@example.org"


def test_a_certificate_no_trusted_ca_signed_is_refused_after_a_reload(
    sendguard: Start, tls_esp: tuple[FakeEsp, Path]
) -> None:
    # Without the CA in SSL_CERT_FILE the peer is not trusted: verification is on, not skipped.
    fake, _ = tls_esp
    proc = sendguard()
    config = copy.deepcopy(proc.config)
    config["upstream"] = https_upstream(fake)
    reload_to(proc, config)
    send_json(proc, to=["cy@example.org"], subject="Hello", text="Hi Cy")
    proc.wait_states({"cy@example.org": "deferred"})
    (delivery,) = proc.deliveries()[-1:]
    assert "certificate" in str(delivery["reason"]).lower(), delivery
    assert fake.calls == []


@pytest.mark.parametrize(
    "then",
    ["client_tls.load_certificates()", "client_tls.import_aiohttp(True)"],
    ids=["load_certificates", "an-import-that-asks-for-them"],
)
def test_aiohttp_imported_without_certificates_gets_them_before_use(
    tmp_path: Path, then: str
) -> None:
    # In a process of its own: this one imported aiohttp long ago. The second form is what a
    # server forked from a process that imported aiohttp without them does at its start
    # (tests/support/forkserver.py).
    probe = (
        "import os, sys\n"
        "from sendguard import client_tls\n"
        "os.environ['SSL_CERT_FILE'] = sys.argv[1]\n"
        "client_tls.import_aiohttp(False)\n"
        "import aiohttp.connector as c\n"
        "assert os.environ['SSL_CERT_FILE'] == sys.argv[1]\n"
        "assert 'SSL_CERT_DIR' not in os.environ\n"
        "before = c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca']\n"
        f"{then}\n"
        "after = c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca']\n"
        "print(before, after)\n"
    )
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ca_file)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert out == ["0", "1"]  # none at the import; the CA of SSL_CERT_FILE once loaded
