"""Work over a whole message, moved off the event loop when the message is large.

Parsing a 20 MB message with the `email` package takes a third of a second of pure Python,
quoted-printable encoding of 5 MB of text more than a second. On the event loop that would
stall every SMTP session and HTTP request meanwhile. In a thread it is little better: a thread
running Python holds the GIL for a whole switch interval (5 ms) each time the loop's thread
lets go of it for a system call, and a small message makes dozens of those, so it waits
hundreds of milliseconds all the same. Such work therefore runs in a worker process
(`in_process`): this process only pickles the argument (a copy) and is otherwise free.
Work that releases the GIL (file writes, SQLite) may stay in a thread (`asyncio.to_thread`).

Small inputs stay on the loop, where any hop would cost more than the work. The worker
processes are started on first use (spawned, not forked: the server runs threads), at most
`PROCESSES` of them, stopped by `close` (`serve` does it when it stops) and killed when the
process that started them dies, even by SIGKILL. Should a worker die, its work is done again
in a thread and the next large input starts a new pool.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import structlog

__all__ = ["LARGE", "PROCESSES", "close", "in_process"]

log = structlog.get_logger("sendguard.offload")

T = TypeVar("T")
A = TypeVar("A")

LARGE = 256 * 1024
"""Content above this many octets is worked on off the loop."""

PROCESSES = 2
"""Worker processes at most (each holds one message while it works on it)."""

WORKER_NICENESS = 10
"""How much lower the worker processes' scheduling priority is than the server's (`nice`)."""

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_pool: ProcessPoolExecutor | None = None
_pool_pid = 0  # the process that made `_pool`: a forked child must not use its parent's


def _executor() -> ProcessPoolExecutor:
    global _pool, _pool_pid  # noqa: PLW0603 - one pool per process, started on first use
    if _pool is None or _pool_pid != os.getpid():
        _pool = ProcessPoolExecutor(
            PROCESSES,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(os.getpid(),),
        )
        _pool_pid = os.getpid()
    return _pool


def _worker_start(parent: int) -> None:
    """In a new worker: end with the process that started it, even one killed with -9 (an
    orphan would wait for work forever); leave Ctrl-C to it (it stops its workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Its work is one large message's; the server's event loop serves every session. Where
    # the two want the same core, the kernel gives it to the loop first.
    os.nice(WORKER_NICENESS)
    # Sent when the thread that started this worker ends: the event loop's, which lives as
    # long as the server does.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def close() -> None:
    """Let the worker processes stop once the work given to them is done; a later use
    starts new ones."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None and _pool_pid == os.getpid():
        pool.shutdown(wait=False)


async def in_process(size: int, work: Callable[[A], T], argument: A) -> T:
    """`work(argument)`, in a worker process when `size` is LARGE; inline otherwise.

    `work` must be picklable (a function defined at the top of a module, or a
    `functools.partial` of one) and so must `argument` and the result. The result is the
    same wherever it runs: only where the CPU time is spent changes.
    """
    if size <= LARGE:
        return work(argument)
    pool = _executor()
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, work, argument)
    except BrokenProcessPool as exc:
        # A worker died (killed, out of memory): this work is done anyway, in a thread.
        log.warning("offload process pool broke; working in a thread", error=str(exc))
        global _pool  # noqa: PLW0603
        if _pool is pool:
            _pool = None
        pool.shutdown(wait=False, cancel_futures=True)
        return await asyncio.to_thread(work, argument)
