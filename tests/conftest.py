from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.support.fake_esp import FakeEsp
from tests.support.forked import close_fork_servers
from tests.support.postgres import DSN, drop_schema_sync, new_schema
from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink

# No per-example deadline in any property test: a timing bound inside a unit test fails on a
# loaded machine (a 2-core CI box running two workers and their servers) while proving nothing
# about the code; speed is `make bench`'s to measure. Each test keeps its own example count.
settings.register_profile("sendguard", deadline=None)
settings.load_profile("sendguard")

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_configure(config: pytest.Config) -> None:
    """Every Python a test starts (`sendguard serve`, the CLI commands) keeps its compiled
    bytecode: where PYTHONDONTWRITEBYTECODE is set (container images often set it), each
    of the suite's hundreds of server starts compiled sendguard's ~120 modules from source
    again, 0.15-0.35 s of CPU each. The bytecode goes to a cache directory outside the
    source tree, so the tree stays as clean as the setting asked."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        cache = Path(tempfile.gettempdir()) / f"sendguard-test-pycache-{os.getuid()}"
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(cache))


def pytest_unconfigure(config: pytest.Config) -> None:
    """The fork server of this test process (tests/support/forkserver.py) ends with it, saving
    its coverage data."""
    close_fork_servers()


# Modules that run for minutes in one piece. Under pytest-xdist (`make test`: `--dist loadfile
# --no-loadscope-reorder`, one module per worker at a time, in collection order) they are handed
# out first, so one worker runs them while the other works through the rest, instead of one of
# them starting last and the whole run waiting on it. The rest follow by number of tests, most
# first (what xdist's own reordering would do).
LONG_MODULES = ("test_openapi_schemathesis.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_in = Counter(item.path for item in items)
    items.sort(key=lambda item: (item.path.name not in LONG_MODULES, -tests_in[item.path]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_backends` that start a server run once per store backend."""
    if metafunc.definition.get_closest_marker("both_backends") and (
        "sendguard" in metafunc.fixturenames
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend of the servers a test starts (SQLite unless parametrised)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def utf8_sink() -> Iterator[Sink]:
    """A sink that offers SMTPUTF8, as an upstream must for internationalised addresses."""
    server = Sink(free_port(), enable_SMTPUTF8=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sendguard(
    tmp_path: Path, sink: Sink, backend: str
) -> Iterator[Callable[..., SendguardProcess]]:
    """Factory: `sendguard(**overrides)` starts a server relaying to the sink.

    With the `postgres` backend, each server gets a fresh schema of the machine's PostgreSQL.
    """
    started: list[SendguardProcess] = []
    schemas: list[str] = []

    def start(
        config: dict[str, Any] | None = None,
        serve_args: list[str] | None = None,
        **sections: Any,
    ) -> SendguardProcess:
        cfg = config or base_config(sink.port)
        if backend == "postgres":
            schemas.append(new_schema())
            cfg["store"] = {"url": DSN, "schema": schemas[-1], "pool_size": 4}
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        proc = SendguardProcess(tmp_path, cfg)
        proc.serve_args += serve_args or []
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    for schema in schemas:
        drop_schema_sync(schema)


@pytest.fixture
def fake() -> Iterator[FakeEsp]:
    """A fake ESP API (SendGrid, Postmark, Mailgun) on loopback that records every call."""
    server = FakeEsp(free_port())
    server.start()
    yield server
    server.stop()
