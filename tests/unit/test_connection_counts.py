"""SMTP connections counted for the whole serve (sendguard/connection_counts.py): the caps,
the hash tables against a plain Counter, exactness between processes, and a dead worker's
connections counted out."""

from __future__ import annotations

import hashlib
import ipaddress
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from sendguard.connection_counts import _HOMES_KEPT, ConnectionCounts, IPAddress, _key

A = ipaddress.ip_address("192.0.2.1")
B = ipaddress.ip_address("192.0.2.2")
V6 = ipaddress.ip_address("2001:db8::1")


@pytest.fixture
def shared() -> Iterator[ConnectionCounts]:
    counts = ConnectionCounts.make(max_connections=6, max_per_ip=4, workers=2)
    yield counts
    counts.close()


def test_alone_the_total_and_per_address_caps_hold_and_are_given_back() -> None:
    counts = ConnectionCounts.alone(max_connections=5, max_per_ip=3)
    assert [counts.admit(A) for _ in range(4)] == [True, True, True, False]
    assert [counts.admit(B) for _ in range(3)] == [True, True, False]  # 5 in all
    assert counts.admit(None) is False
    assert (counts.connections(), counts.connections(A), counts.connections(B)) == (5, 3, 2)
    counts.release(A)
    assert counts.admit(B) is True
    assert counts.admit(A) is False
    counts.release(B)
    counts.release(B)
    assert counts.admit(A) is True
    assert counts.connections() == 4


def test_ipv4_ipv6_and_an_unknown_peer_are_counted_apart() -> None:
    counts = ConnectionCounts.alone(max_connections=10, max_per_ip=1)
    mapped_lookalike = ipaddress.ip_address("::c000:201")  # 192.0.2.1's bytes, not IPv4-mapped
    assert [counts.admit(ip) for ip in (A, V6, None, mapped_lookalike)] == [True] * 4
    assert [counts.admit(ip) for ip in (A, V6, None, mapped_lookalike)] == [False] * 4


def test_the_tables_agree_with_a_counter_through_many_admits_and_releases() -> None:
    # A small table (64 entries) and many addresses: collisions, wrap-around and
    # backward-shift removals all happen.
    rng = random.Random(11)
    counts = ConnectionCounts.alone(max_connections=30, max_per_ip=3)
    addresses: list[IPAddress] = [
        ipaddress.ip_address(f"10.0.{i // 256}.{i % 256}") for i in range(80)
    ]
    model: Counter[IPAddress] = Counter()
    for _ in range(20_000):
        ip = rng.choice(addresses)
        if model[ip] and rng.random() < 0.5:
            counts.release(ip)
            model[ip] -= 1
        else:
            expected = model.total() < 30 and model[ip] < 3
            assert counts.admit(ip) is expected
            model[ip] += expected
        assert counts.connections() == model.total()
    for ip in addresses:
        assert counts.connections(ip) == model[ip], ip


def test_the_workers_share_the_caps_and_a_dead_workers_share_is_counted_out(
    shared: ConnectionCounts,
) -> None:
    assert shared.fd is not None
    first = ConnectionCounts.attach(shared.fd, 0)
    second = ConnectionCounts.attach(shared.fd, 1)
    assert [first.admit(A) for _ in range(3)] == [True] * 3
    # The per-address cap is the serve's: 4 in all, not 4 per worker.
    assert [second.admit(A) for _ in range(2)] == [True, False]
    assert [second.admit(B) for _ in range(3)] == [True, True, False]  # 6 in all
    shared.reset(0)  # the first worker died with its three
    assert (shared.connections(), shared.connections(A), shared.connections(B)) == (3, 1, 2)
    assert [ConnectionCounts.attach(shared.fd, 0).admit(A) for _ in range(4)] == [True] * 3 + [
        False
    ]
    second.release(A)
    assert shared.connections(A) == 3


# Admits `tries` connections from one of two addresses in slot `slot` of the counts inherited as
# fd `fd`, as fast as it can once stdin says go; prints how many were admitted, then waits.
ADMITTER = """
import ipaddress, sys
from sendguard.connection_counts import ConnectionCounts
fd, slot, tries = map(int, sys.argv[1:])
counts = ConnectionCounts.attach(fd, slot)
addresses = [ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")]
sys.stdin.readline()
print(sum(counts.admit(addresses[i % 2]) for i in range(tries)), flush=True)
sys.stdin.read()
"""


def admitter(fd: int, slot: int, tries: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ADMITTER, str(fd), str(slot), str(tries)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(fd,),
    )


@pytest.mark.parametrize(
    ("max_connections", "max_per_ip", "cap"),
    [(3000, 1400, 2800), (2000, 5000, 2000)],
    ids=["per address", "in total"],
)
def test_two_processes_admitting_at_once_stop_exactly_at_the_cap(
    max_connections: int, max_per_ip: int, cap: int
) -> None:
    counts = ConnectionCounts.make(max_connections, max_per_ip, workers=2)
    assert counts.fd is not None
    processes = [admitter(counts.fd, slot, 2500) for slot in (0, 1)]
    try:
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        admitted = [int(p.stdout.readline()) for p in processes if p.stdout is not None]
        # Both race for the same two addresses: the cap exactly, never more (nor fewer).
        assert sum(admitted) == cap, admitted
        assert counts.connections() == cap
        # One is killed with -9 holding its connections: they stay counted until the
        # supervisor counts them out, and the other's stay counted after that.
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(20)
        assert counts.connections() == cap
        counts.reset(0)
        assert counts.connections() == admitted[1]
        assert counts.connections(A) + counts.connections(B) == admitted[1]
    finally:
        for process in processes:
            process.kill()
            process.wait(20)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        counts.close()


def test_an_address_keeps_its_home_entry_across_the_kept_ones() -> None:
    # `_home` keeps what it computed per address; past _HOMES_KEPT addresses it starts again.
    # Every answer is the keyed hash's, whether kept or computed.
    counts = ConnectionCounts.alone(100, 10)
    addresses = [ipaddress.ip_address(f"10.0.{n // 256}.{n % 256}") for n in range(5000)]
    for ip in [*addresses, *addresses[:100]]:
        key = _key(ip)
        digest = hashlib.blake2b(key, digest_size=8, key=counts._hash_key).digest()
        assert counts._home(key) == int.from_bytes(digest, "little") & (counts._capacity - 1)
    assert len(counts._homes) <= _HOMES_KEPT
    assert counts.admit(addresses[0])
    counts.release(addresses[0])
    assert counts.connections() == 0
