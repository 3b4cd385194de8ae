from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock, PolicyHarness

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
Harness = Callable[..., Awaitable[PolicyHarness[Any]]]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """`await harness(PolicyClass, options)`: a policy harness at T0, closed after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            policy_class: type[Any], options: BaseModel | dict[str, Any] | None = None
        ) -> PolicyHarness[Any]:
            return await stack.enter_async_context(
                PolicyHarness(policy_class, options, clock=FakeClock(T0))
            )

        yield start


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An SQLite store opened in the test's directory, closed after it (a module may have a
    `store` fixture of its own)."""
    opened = SQLiteStore(tmp_path / "s.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
