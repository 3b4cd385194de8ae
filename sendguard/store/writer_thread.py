"""The SQLite writer's own thread: runs what it is handed, one after the other, in order.

Every group commit is a trip to this thread and back. Through a `ThreadPoolExecutor` a trip
also made a `concurrent.futures.Future` (a `threading.Condition` and its lock), a work item,
took the executor's shutdown lock and its idle semaphore (a Python `Semaphore` over another
Condition) on the way there, and set the future's result and released the semaphore on the
thread: about 90,000 instructions a trip under callgrind, 45,000 through a `SimpleQueue` to a
thread of one's own (docs/performance.md, "CPU per message", session 13). The
commit hands its results back to the loop itself (`call_soon_threadsafe`), so it needs no
future; `run` is for the few calls whose result the caller awaits (open, close).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

import structlog

log = structlog.get_logger("sendguard.store.sqlite")
T = TypeVar("T")


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():
        return  # the caller gave up waiting
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]  # None only with an error


class WriterThread:
    """One thread, started at once, serving `post` and `run` in the order they are asked.

    A daemon, as the executor's thread was not: a commit still running when the interpreter
    exits without `SQLiteDatabase.close` (which `shutdown`s this after the last commit) was
    answered to nobody, and SQLite keeps a transaction it did not commit out of the file.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except BaseException:  # as the executor's thread, it serves on
                # `post`'s jobs report their own failures (the commit hands them to the
                # loop); this only keeps one that did not from ending the thread.
                log.exception("SQLite writer thread: a job raised")

    def post(self, job: Callable[[], object]) -> None:
        """Run `job` on the thread after what is already asked; nothing waits for it."""
        if self._stopped:
            raise RuntimeError("the SQLite writer thread is shut down")
        self._queue.put(job)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the thread after what is already asked, and return what it returns
        (or raise what it raises)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as an executor does
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

        self.post(job)
        return await future

    def shutdown(self) -> None:
        """Let the thread finish what it was asked, then end it; wait for that."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
        self._thread.join()
