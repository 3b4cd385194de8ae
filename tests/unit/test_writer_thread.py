"""The SQLite writer's thread (sendguard/store/writer_thread.py), which replaced a
one-thread ThreadPoolExecutor: the same order, results and failures, and the same thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sendguard.store.writer_thread import WriterThread


async def test_jobs_run_on_one_thread_in_the_order_they_were_asked() -> None:
    thread = WriterThread("test-writer")
    seen: list[tuple[int, str]] = []
    try:
        for n in range(50):
            thread.post(lambda n=n: seen.append((n, threading.current_thread().name)))
        last = await thread.run(lambda: len(seen))
    finally:
        thread.shutdown()
    assert last == 50
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-writer"}
    assert threading.current_thread().name != "test-writer"


async def test_run_returns_what_the_call_returns_and_raises_what_it_raises() -> None:
    thread = WriterThread("test-writer")
    try:
        assert await thread.run(lambda: 42) == 42

        def fails() -> None:
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await thread.run(fails)
        # A posted job that raises ends neither the thread nor the jobs after it.
        thread.post(fails)
        assert await thread.run(lambda: "still serving") == "still serving"
    finally:
        thread.shutdown()


async def test_shutdown_finishes_what_was_asked_and_refuses_more() -> None:
    thread = WriterThread("test-writer")
    done: list[int] = []
    gate = threading.Event()
    thread.post(gate.wait)
    for n in range(5):
        thread.post(lambda n=n: done.append(n))
    gate.set()
    await asyncio.to_thread(thread.shutdown)
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="shut down"):
        thread.post(lambda: None)
    thread.shutdown()  # again: nothing to do
