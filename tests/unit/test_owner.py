"""Claim owners: a process is judged gone only when that is certain (owner.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendguard.owner import owner_gone, process_owner

HOST = socket.gethostname()


@pytest.fixture
def finished_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


@pytest.fixture
def zombie() -> Iterator[int]:
    """The pid of a process that has ended but is not reaped yet."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the child did not end")
    yield child.pid
    child.wait()


def test_this_process_runs() -> None:
    owner = process_owner()
    assert owner.startswith(f"{HOST}:{os.getpid()}/")
    assert not owner_gone(owner)


def test_a_pid_taken_by_another_process_is_not_its_owner() -> None:
    # This process's pid, with a start time it did not start at: the owner that had the pid
    # before is gone although a process with the pid runs. `host:pid` alone called it running.
    owner = process_owner()
    head, _, started = owner.rpartition(".")
    assert owner_gone(f"{head}.{int(started) - 1}")
    assert not owner_gone(f"{HOST}:{os.getpid()}")


def test_an_ended_process_is_gone(finished_pid: int) -> None:
    incarnation = process_owner().partition("/")[2]
    assert owner_gone(f"{HOST}:{finished_pid}/{incarnation}")
    assert owner_gone(f"{HOST}:{finished_pid}")  # as written before owners had incarnations


def test_a_process_not_reaped_yet_is_gone(zombie: int) -> None:
    incarnation = process_owner().partition("/")[2]
    assert owner_gone(f"{HOST}:{zombie}/{incarnation}")


def test_what_this_process_cannot_judge_counts_as_running(finished_pid: int) -> None:
    boot, namespace, started = process_owner().partition("/")[2].split(".")
    # Another host, another boot of this host, another pid namespace (a container with the
    # same host name): its pids are not this process's to look up.
    assert not owner_gone(f"another-host:{finished_pid}/{boot}.{namespace}.{started}")
    other_boot = "0" * len(boot)
    assert not owner_gone(f"{HOST}:{finished_pid}/{other_boot}.{namespace}.{started}")
    assert not owner_gone(f"{HOST}:{finished_pid}/{boot}.{int(namespace) + 1}.{started}")
    assert not owner_gone(f"{HOST}:{finished_pid}/{boot}.{namespace}.")
    assert not owner_gone("another-host:1")
    assert not owner_gone("not an owner")
    assert not owner_gone("me")
