"""Store backends by entry point, and the contract split into roles."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sendguard_example_store import DirectoryStore

from sendguard.errors import ConfigError
from sendguard.facts import Fact
from sendguard.store import StoreSettings, base, installed_backends, load_backend, open_store
from sendguard.store.postgres import PostgresStore
from sendguard.store.sqlite import SQLiteStore, sqlite_path
from tests.contract.conftest import BACKENDS, SIMULATE_SCRATCH

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
ROLES = [getattr(base, name) for name in base.__all__ if name != "Store"]


def members(protocol: type) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


def test_the_built_in_schemes_are_entry_points() -> None:
    found = installed_backends()
    assert found["sqlite"].value == "sendguard.store.sqlite:BACKEND"
    assert found["postgresql"].value == found["postgres"].value
    # tests/store_pkg, a distribution of its own, plugs in the same way
    assert found["sqlite-dir"].value == "sendguard_example_store:BACKEND"


def test_each_scheme_builds_its_backend_without_touching_anything(tmp_path: Path) -> None:
    settings = StoreSettings(busy_timeout=timedelta(seconds=2), schema="s1", pool_size=3)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db", settings), SQLiteStore)
    assert isinstance(open_store("postgresql://nobody@192.0.2.1/x", settings), PostgresStore)
    assert isinstance(open_store("POSTGRES://nobody@192.0.2.1/x", settings), PostgresStore)
    plugged = open_store(f"sqlite-dir:///{tmp_path}/state", settings)
    assert isinstance(plugged, DirectoryStore)
    assert plugged.directory == tmp_path / "state"
    assert list(tmp_path.iterdir()) == []  # nothing opened, nothing created


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://x/db", "no store backend for the scheme 'mysql' is installed"),
        ("var/sendguard.db", "no store backend for a URL without a scheme is installed"),
        ("sqlite://var/x.db", "'sqlite://var/x.db' must look like sqlite:///var/sendguard.db"),
        ("sqlite:///", "must look like sqlite:///"),
        ("sqlite-dir://host/x", "must look like sqlite-dir:///relative/dir"),
        ("sqlite-dir:///", "names no directory"),
    ],
)
def test_a_url_no_backend_takes_is_a_config_error_naming_store_url(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    [found] = caught.value.problems
    assert found.path == "store.url"
    assert problem in found.message
    if "no store backend" in problem:
        assert "installed schemes: postgres, postgresql, sqlite, sqlite-dir" in found.message


def test_sqlite_urls_are_relative_or_absolute() -> None:
    assert sqlite_path("sqlite:///var/x.db") == Path("var/x.db")
    assert sqlite_path("sqlite:////srv/x.db") == Path("/srv/x.db")
    with pytest.raises(ValueError, match="must look like"):
        sqlite_path("postgresql://x")


def test_the_contract_suite_runs_on_every_installed_backend_once() -> None:
    ids = [p if isinstance(p, str) else p.values[0] for p in BACKENDS]
    assert ids == ["postgres", "sqlite", "sqlite-dir", SIMULATE_SCRATCH]


def test_every_member_of_the_contract_belongs_to_exactly_one_role() -> None:
    seen: dict[str, str] = {}
    for role in ROLES:
        for name in members(role):
            assert name not in seen, f"{name} is in {seen[name]} and {role.__name__}"
            seen[name] = role.__name__
    assert members(base.Store) == set()  # Store only combines the roles
    assert set(base.Store.__mro__) >= set(ROLES)
    assert "stats" not in seen  # a backend's own counters are not the contract
    assert len(seen) > 50


def test_each_role_is_documented() -> None:
    docs = (ROOT / "docs" / "stores.md").read_text()
    missing = [role.__name__ for role in ROLES if f"| `{role.__name__}` |" not in docs]
    assert missing == [], f"docs/stores.md has no row for {missing}"


async def test_the_docs_example_backend_runs(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "stores.md").read_text()
    [block] = re.findall(r"```python\n(.*?)```", docs, re.DOTALL)
    namespace: dict[str, Any] = {"__name__": "docs_stores_example"}
    exec(compile(block, "docs/stores.md", "exec"), namespace)
    backend = namespace["BACKEND"]
    with pytest.raises(ValueError, match="sqlite-dir:///relative/dir"):
        backend.from_url("sqlite-dir://host/x", StoreSettings())
    async with backend.scratch(tmp_path, {}) as store:
        await store.open()
        try:
            fact = Fact("meeting:1:status", "completed", T0)
            await store.put_fact(fact)
            assert await store.get_fact("meeting:1:status") == fact
        finally:
            await store.close()
    assert (tmp_path / "state" / "sendguard.db").is_file()


def test_load_backend_names_what_is_installed() -> None:
    assert callable(load_backend("sqlite").from_url)
    with pytest.raises(ConfigError, match="installed schemes: postgres, postgresql, sqlite"):
        load_backend("oracle")
