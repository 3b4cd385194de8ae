"""Once `serve` is up, startup's objects are frozen and the youngest generation is collected
less often (sendguard/cli.py `_freeze_heap`; docs/performance.md, session 10)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from sendguard import cli


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@pytest.mark.usefixtures("collector")
async def test_serving_collects_the_youngest_generation_every_10000_allocations() -> None:
    gc.set_threshold(700, 10, 10)  # the interpreter's own
    started = asyncio.Event()
    settle = asyncio.create_task(cli._freeze_heap(started))  # what serve runs
    await asyncio.sleep(0)
    assert gc.get_threshold() == (700, 10, 10)  # not before the server has started
    started.set()
    await settle
    assert gc.get_threshold() == (10_000, 10, 10)
    assert gc.get_freeze_count() > 0
