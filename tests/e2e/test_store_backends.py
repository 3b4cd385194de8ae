"""A store backend from another distribution serves a real server, picked by `store.url` alone.

`tests/store_pkg` registers the `sqlite-dir` scheme under the `sendguard.stores` entry points;
nothing in sendguard names it.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.process import SendguardProcess, base_config, run_with_config
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]

CONTENT = (
    b"From: shop@example.com\r\nTo: Ann@Example.org\r\nSubject: Hello\r\n"
    b"X-Sendguard-Campaign: welcome\r\n\r\nHi.\r\n"
)


def test_a_plugged_in_backend_keeps_the_state_of_a_real_server(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(store={"url": "sqlite-dir:///var/state", "busy_timeout": "500ms"})
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.sendmail("shop@example.com", ["Ann@Example.org"], CONTENT)
    sink.wait_for(1, timeout=20)
    proc.wait_states({"Ann@Example.org": "sent"}, timeout=20)
    # The backend's own URL handling put the database where its scheme says.
    assert (proc.workdir / "var" / "state" / "sendguard.db").is_file()
    assert not (proc.workdir / "var" / "sendguard.db").exists()

    # What it keeps survives a restart: the same delivery, still sent, nothing sent twice.
    assert proc.terminate() == 0
    proc.start()
    assert proc.states() == {"Ann@Example.org": "sent"}
    assert len(sink.received) == 1


def test_check_config_names_an_unknown_scheme_and_the_installed_ones(tmp_path: Path) -> None:
    config = base_config(None)
    config["store"] = {"url": "mysql://db.example/sendguard"}
    code, output = run_with_config("check-config", config, tmp_path)
    assert code == 2, output
    assert "store.url: no store backend for the scheme 'mysql' is installed" in output
    assert "installed schemes: postgres, postgresql, sqlite, sqlite-dir" in output

    config["store"] = {"url": "sqlite-dir://host/var/state"}
    code, output = run_with_config("check-config", config, tmp_path)
    assert code == 2, output
    assert "store.url: 'sqlite-dir://host/var/state' must look like sqlite-dir:///" in output
