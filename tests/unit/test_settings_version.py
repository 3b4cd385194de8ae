"""The settings' version shared by workers (sendguard/store/settings_version.py): a sequence
lock in an 8-byte file, with real processes for the writer that dies and the one that waits."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sendguard.store.settings_version import SettingsVersion

# A writer in a process of its own: enters `writing`, says so, then sleeps (killed, or told
# to finish by closing its stdin).
WRITER = """
import asyncio, sys
from pathlib import Path
from sendguard.store.settings_version import SettingsVersion

async def main() -> None:
    version = SettingsVersion(Path(sys.argv[1]))
    version.open()
    async with version.writing():
        print("writing", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("done", flush=True)

asyncio.run(main())
"""


def opened(path: Path) -> SettingsVersion:
    version = SettingsVersion(path)
    version.open()
    return version


def writer(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    return proc


async def test_a_write_is_odd_inside_and_even_and_new_after(tmp_path: Path) -> None:
    path = tmp_path / "store.db.settings"
    mine, sibling = opened(path), opened(path)
    try:
        assert mine.current() == sibling.current() == 0
        async with mine.writing():
            assert mine.current() is None and sibling.current() is None
        assert mine.current() == sibling.current() == 2
        with pytest.raises(RuntimeError, match="refused"):
            async with sibling.writing():
                raise RuntimeError("refused")  # a write that fails moves the version too
        assert mine.current() == sibling.current() == 4
    finally:
        mine.close()
        sibling.close()
    again = opened(path)  # the version outlives the processes that used it
    try:
        assert again.current() == 4
    finally:
        again.close()


async def test_a_writer_killed_inside_leaves_it_odd_until_a_worker_opens_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db.settings"
    reader = opened(path)
    try:
        with writer(path) as proc:
            assert reader.current() is None
            late = opened(path)  # a worker starting while the writer is at work leaves it odd
            assert late.current() is None
            late.close()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert reader.current() is None  # nobody trusts what was kept before the write
        restarted = opened(path)  # the supervisor's next worker: no writer holds the lock
        try:
            assert restarted.current() == reader.current() == 2
        finally:
            restarted.close()
        async with reader.writing():  # the next write passes what the dead one left
            assert reader.current() is None
        assert reader.current() == 4
    finally:
        reader.close()


async def test_a_writer_waits_for_another_process_s_write(tmp_path: Path) -> None:
    path = tmp_path / "store.db.settings"
    mine = opened(path)
    try:
        with writer(path) as proc:
            assert proc.stdin is not None
            release = threading.Timer(0.3, proc.stdin.close)  # the other writer then finishes
            started = time.monotonic()
            release.start()
            async with mine.writing():
                entered = time.monotonic() - started
            release.join()
            assert proc.wait(10) == 0
        # One write after the other: 0 -> 1 -> 2 (theirs), 2 -> 3 -> 4 (mine). Entered while
        # theirs ran, mine would have made 1 -> 3 -> 4 and theirs then 4 -> 5.
        assert mine.current() == 4
        assert entered >= 0.25
    finally:
        mine.close()


def test_current_is_none_unless_open(tmp_path: Path) -> None:
    version = SettingsVersion(tmp_path / "never.settings")
    assert version.current() is None
    assert not (tmp_path / "never.settings").exists()
