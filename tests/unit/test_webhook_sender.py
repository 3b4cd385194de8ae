"""The webhook sender gives an event up after max_age, and discards events of removed webhooks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sendguard.clock import SystemClock
from sendguard.config import WebhookOptions
from sendguard.metrics import Metrics
from sendguard.store.sqlite import SQLiteStore
from sendguard.webhooks import WebhookSender
from tests.contract.test_store import add
from tests.support.process import free_port


async def _run_until_empty(store: SQLiteStore, sender: WebhookSender) -> None:
    task = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(10):
            while await store.pending_webhook_events():
                await asyncio.sleep(0.02)
    finally:
        await sender.stop()
        await task


def _abandoned(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "sendguard_webhook_events_total", {"outcome": "abandoned"}
    )
    return value or 0.0


async def test_an_event_older_than_max_age_is_given_up(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=timedelta(seconds=1))
    await store.open()
    metrics = Metrics()
    down = WebhookOptions(
        url=f"http://127.0.0.1:{free_port()}/h",  # nothing listens there
        secret="s" * 16,
        min_backoff=timedelta(milliseconds=50),
        max_age=timedelta(hours=1),
    )
    sender = WebhookSender(store, SystemClock(), metrics, [down], "me", timedelta(milliseconds=20))
    await add(store)  # recorded long ago (the contract tests' T0): past max_age at once
    assert await store.pending_webhook_events() == 1
    await _run_until_empty(store, sender)
    assert _abandoned(metrics) == 1
    await store.close()


async def test_events_of_a_webhook_removed_by_a_reload_are_discarded(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=timedelta(seconds=1))
    await store.open()
    metrics = Metrics()
    hook = WebhookOptions(url="http://127.0.0.1:9/h", secret="s" * 16)
    sender = WebhookSender(store, SystemClock(), metrics, [hook], "me", timedelta(milliseconds=20))
    await add(store)
    other = hook.model_copy(update={"url": "http://127.0.0.1:9/other"})
    sender.reconfigure([other])  # the first URL is gone; its pending event cannot be sent
    await _run_until_empty(store, sender)
    assert _abandoned(metrics) == 1
    await store.close()
