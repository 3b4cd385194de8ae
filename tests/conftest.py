from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sendguard(tmp_path: Path, sink: Sink) -> Iterator[Callable[..., SendguardProcess]]:
    """Factory: `sendguard(**overrides)` starts a server relaying to the sink."""
    started: list[SendguardProcess] = []

    def start(config: dict[str, Any] | None = None, **sections: Any) -> SendguardProcess:
        cfg = config or base_config(sink.port)
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        proc = SendguardProcess(tmp_path, cfg)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
