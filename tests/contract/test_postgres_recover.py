"""PostgreSQL at start: the claims of a process that is certainly gone are released at once;
those of a running instance (of this host or another) wait for their lease."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from sendguard.owner import process_owner
from sendguard.store.postgres import PostgresStore
from tests.contract.test_store import T0, add
from tests.support.postgres import open_store

pytestmark = pytest.mark.postgres
LEASE = timedelta(minutes=5)


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with open_store(pool_size=2) as opened:
        yield opened


async def test_recover_releases_only_the_claims_of_owners_that_are_gone(
    store: PostgresStore,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    incarnation = process_owner().partition("/")[2]
    gone = f"{socket.gethostname()}:{dead.pid}/{incarnation}"
    owners = [gone, process_owner(), "another-host:1/x.y.1", f"{socket.gethostname()}:{dead.pid}"]
    claimed = []
    for number, owner in enumerate(owners):
        await add(store, recipients=(f"r{number}@example.org",))
        (delivery,) = await store.claim_due(T0, owner, 1, LEASE, send_within=timedelta(days=5))
        claimed.append(delivery.id)
    assert await store.claim_due(T0, "next", 10, LEASE) == []

    # The gone owner's, new and old form; not this running process's nor another host's.
    assert await store.recover(T0) == 2
    taken = await store.claim_due(T0, "next", 10, LEASE, send_within=timedelta(days=5))
    assert {d.id for d in taken} == {claimed[0], claimed[3]}
    assert all(d.attempts == 2 for d in taken)  # sent again: one more attempt
    assert await store.recover(T0) == 0
