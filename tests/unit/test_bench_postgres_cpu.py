"""The bench counts the CPU of the PostgreSQL server it uses, and of no other."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import asyncpg
import pytest

from bench import run
from tests.support.postgres import DSN, reachable

pytestmark = pytest.mark.postgres


async def test_the_servers_processes_are_its_postmasters_tree_and_this_clients_backend() -> None:
    if (problem := await reachable()) is not None:
        pytest.fail(problem)
    port = urllib.parse.urlsplit(DSN).port or 5432
    conn = await asyncpg.connect(DSN)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        found = run.postgres_processes([os.getpid()], port)
        # Of the server's backends, only this client's (the others serve other clients).
        backends = [pid for pid in found if b"(" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        (postmaster,) = [pid for pid in found if pid in run.POSTMASTERS]
        tree = run.process_tree(postmaster)
    finally:
        await conn.close()

    assert backend in found
    assert set(found) <= set(tree)
    # Its ended children's CPU is counted with its own (autovacuum's workers).
    assert run.process_cpu(postmaster, reaped=True) >= run.process_cpu(postmaster)
    assert backends == [backend]
    # No server listens on a port nobody uses: nothing to count there.
    assert run.postgres_processes([os.getpid()], 1) == []
