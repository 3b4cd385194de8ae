"""Work over a large message runs in a worker process: the same result, without this
process's interpreter (the event loop's GIL) doing the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendguard import offload
from sendguard.content import content_hash
from sendguard.delivery.esp_upstreams import parse
from sendguard.errors import UpstreamPermanent
from sendguard.offload import LARGE, in_process
from tests.support.offload_work import die_outside, pid


@pytest.fixture(autouse=True)
def _stop_workers() -> Iterator[None]:
    yield
    offload.close()


def offer(size: int) -> bytes:
    # Quoted-printable: a message the `email` parser reads (a plain one without a transfer
    # encoding is fingerprinted without it, cheaply, wherever it runs).
    line = b"Get your free offer at https://shop.example/x?utm_source=mail now \r\n"
    head = b"Subject: Offer\r\nContent-Type: text/plain\r\n"
    return (
        head + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + line * (size // len(line))
    )


async def test_small_work_stays_here_and_large_work_goes_to_a_worker() -> None:
    assert await in_process(LARGE, pid, None) == os.getpid()
    worker = await in_process(LARGE + 1, pid, None)
    assert worker != os.getpid()
    assert await in_process(LARGE + 1, pid, None) == worker  # started once, then reused


async def test_a_worker_yields_the_cpu_to_the_server_where_both_want_it() -> None:
    # os.nice(0) answers the caller's niceness: the worker's is the server's plus 10.
    mine = os.nice(0)
    assert await in_process(LARGE + 1, os.nice, 0) == min(mine + offload.WORKER_NICENESS, 19)
    assert os.nice(0) == mine  # the server's own is untouched


async def test_large_work_gives_the_same_result_at_a_fraction_of_this_process_cpu() -> None:
    raw = offer(6 << 20)
    await in_process(LARGE + 1, pid, None)  # the worker's start is not what is measured
    started = time.process_time()
    expected = content_hash(raw)
    inline = time.process_time() - started
    started = time.process_time()
    assert await in_process(len(raw), content_hash, raw) == expected
    here = time.process_time() - started
    # CPU time, not wall time: the figure does not depend on what else runs on the machine.
    # What is left here is handing the argument over (a copy into a pipe, ~1 ms per 4 MB).
    assert here < inline / 4, (here, inline)


async def test_a_worker_that_dies_leaves_the_work_done_here_and_a_new_pool_next() -> None:
    assert await in_process(LARGE + 1, die_outside, os.getpid()) == os.getpid()
    assert await in_process(LARGE + 1, pid, None) != os.getpid()


async def test_what_the_work_raises_is_raised_here() -> None:
    # An ESP upstream refuses a message without a text part, however large it is.
    attachment = (
        b"Subject: Files\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"QUJD\r\n"
        * (LARGE // 6 + 1)
    )
    with pytest.raises(UpstreamPermanent, match="no text or HTML part"):
        await parse(attachment)


STARTS_A_WORKER = """
import asyncio, time
from sendguard.offload import LARGE, in_process
from tests.support.offload_work import pid
print(asyncio.run(in_process(LARGE + 1, pid, None)), flush=True)
time.sleep(120)
"""


def gone(process: int) -> bool:
    try:
        stat = Path(f"/proc/{process}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"  # ended, not yet reaped


def test_workers_end_with_a_server_killed_with_sigkill() -> None:
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", STARTS_A_WORKER],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # multiprocessing's note on what the kill left behind
        text=True,
    ) as server:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        assert not gone(worker)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    deadline = time.monotonic() + 10
    while not gone(worker):
        assert time.monotonic() < deadline, f"worker {worker} outlived its server"
        time.sleep(0.05)
