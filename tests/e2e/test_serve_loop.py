"""`serve` runs on uvloop unless told `--loop asyncio`; mail goes through on either."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.process import SendguardProcess, base_config
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("args", "loop"), [([], "uvloop"), (["--loop", "asyncio"], "asyncio")])
def test_the_event_loop_is_uvloop_unless_asked_otherwise(
    tmp_path: Path, sink: Sink, args: list[str], loop: str
) -> None:
    proc = SendguardProcess(tmp_path, base_config(sink.port))
    proc.serve_args = args
    proc.start()
    try:
        started = next(e for e in proc.log_events() if e.get("event") == "sendguard started")
        assert started["loop"] == loop
        send(proc, ["loop@example.org"], message())
        (got,) = sink.wait_for(1, timeout=20)
        assert got.rcpt_tos == ["loop@example.org"]
    finally:
        proc.stop()
