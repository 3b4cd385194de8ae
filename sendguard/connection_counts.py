"""SMTP connections counted for the whole `serve`: `smtp.max_connections` and
`smtp.max_connections_per_ip` hold across the workers of `serve --workers N`, not per process.

The counts live in shared memory (a memfd) that the supervisor makes before it starts the
workers; each worker inherits it and maps it:
- a header: the two caps, the size of the tables and a random key for their hash (the same in
  every worker, so each can look an address up in the others' tables);
- one region per worker slot, written only by the worker in that slot: how many connections it
  holds, and a hash table (open addressing, linear probing) of client address -> how many of
  them come from that address.
A worker admits a connection under a POSIX record lock on the memfd (`fcntl`): it sums the
totals and the address's counts over every region, refuses at a cap, else counts the
connection in its own region; a closed connection is counted out the same way. The lock is
held for a few microseconds, never across an await.

A worker killed with -9 holds no lock (the kernel drops a dead process's record locks) and its
connections died with it: the supervisor zeroes its region before it starts the worker that
replaces it. Since only its owner writes a region, whatever a worker killed half-way through a
write left behind is in the region being zeroed, never in another worker's.

The caps are the ones the serve started with (the `smtp` section takes effect on a restart): a
worker started again after the file changed still counts against the supervisor's caps, so all
workers refuse at the same point. A process serving alone uses the same tables, in private
memory and without the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import mmap
import os
import struct
from collections.abc import Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEADER = struct.Struct("<16sIIII")
"""Hash key, max_connections, max_connections_per_ip, table capacity, number of regions."""
_HEADER_SIZE = 64
_COUNT = struct.Struct("<I")
_REGION_HEAD = 8
"""A region starts with the number of connections its worker holds (then padding)."""
_KEY = 16
_ENTRY = _KEY + _COUNT.size
"""An address (16 bytes, IPv4 as IPv4-mapped IPv6) and its count; a count of 0 is a free entry."""
_UNKNOWN = bytes(_KEY)
"""The key of a connection without a client address: `::`, which no peer can have."""
_V4_MAPPED = bytes(10) + b"\xff\xff"
_HOMES_KEPT = 4096
"""How many addresses' home entries a process keeps (`_home`); past that it starts again."""


def _key(ip: IPAddress | None) -> bytes:
    if ip is None:
        return _UNKNOWN
    if isinstance(ip, ipaddress.IPv4Address):
        return _V4_MAPPED + ip.packed
    return ip.packed


def _capacity(max_connections: int) -> int:
    """Entries per region: a power of two, at least twice the most connections a worker can
    hold (all of them), so a table is at most half full and every probe ends at a free entry."""
    return 1 << max(4, (2 * max_connections - 1).bit_length())


class ConnectionCounts:
    """The connections of every worker of one serve, by client address."""

    def __init__(self, memory: mmap.mmap, fd: int | None, slot: int | None) -> None:
        """Use `make` (a serve's), `attach` (a worker's) or `alone` instead."""
        self._memory = memory
        self._fd = fd
        self._slot = slot
        header = _HEADER.unpack_from(memory, 0)
        self._hash_key: bytes = header[0]
        self.max_connections: int = header[1]
        self.max_per_ip: int = header[2]
        self._capacity: int = header[3]
        self._regions: int = header[4]
        self._region_size: int = _REGION_HEAD + self._capacity * _ENTRY
        self._homes: dict[bytes, int] = {}  # see _home

    @classmethod
    def make(cls, max_connections: int, max_per_ip: int, workers: int) -> ConnectionCounts:
        """A supervisor's: shared memory with a region for each of `workers` slots, handed
        to the workers as `fd` (they `attach` to it)."""
        capacity = _capacity(max_connections)
        size = _HEADER_SIZE + workers * (_REGION_HEAD + capacity * _ENTRY)
        fd = os.memfd_create("sendguard-smtp-connections", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)  # zeroes, allocated as they are first written
            memory = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            raise
        _HEADER.pack_into(memory, 0, os.urandom(16), max_connections, max_per_ip, capacity, workers)
        return cls(memory, fd, None)

    @classmethod
    def attach(cls, fd: int, slot: int) -> ConnectionCounts:
        """A worker's: the supervisor's counts (inherited as `fd`), counting in region `slot`."""
        return cls(mmap.mmap(fd, os.fstat(fd).st_size), fd, slot)

    @classmethod
    def alone(cls, max_connections: int, max_per_ip: int) -> ConnectionCounts:
        """A process serving alone: one region in private memory, no lock."""
        capacity = _capacity(max_connections)
        memory = mmap.mmap(-1, _HEADER_SIZE + _REGION_HEAD + capacity * _ENTRY)
        _HEADER.pack_into(memory, 0, os.urandom(16), max_connections, max_per_ip, capacity, 1)
        return cls(memory, None, 0)

    @property
    def fd(self) -> int | None:
        """The descriptor a worker inherits (None when alone)."""
        return self._fd

    def close(self) -> None:
        """Unmap the counts and close the descriptor (the supervisor's, when the serve ends)."""
        self._memory.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def admit(self, ip: IPAddress | None) -> bool:
        """Count a new connection from `ip` in, unless the serve holds `max_connections`
        connections already, or `max_per_ip` from `ip`."""
        key = _key(ip)
        home = self._home(key)
        self._lock()
        try:
            if sum(self._total(r) for r in range(self._regions)) >= self.max_connections:
                return False
            from_ip = sum(self._find(r, key, home)[1] for r in range(self._regions))
            if from_ip >= self.max_per_ip:
                return False
            own = self._own()
            at, count = self._find(own, key, home)
            if count == 0:
                self._memory[at : at + _KEY] = key
            _COUNT.pack_into(self._memory, at + _KEY, count + 1)
            self._set_total(own, self._total(own) + 1)
        finally:
            self._unlock()
        return True

    def release(self, ip: IPAddress | None) -> None:
        """Count out a connection `admit` let in."""
        key = _key(ip)
        home = self._home(key)
        self._lock()
        try:
            own = self._own()
            at, count = self._find(own, key, home)
            if count == 0:
                return  # not counted here (cannot happen: admit and release come in pairs)
            if count > 1:
                _COUNT.pack_into(self._memory, at + _KEY, count - 1)
            else:
                self._remove(own, (at - self._entries(own)) // _ENTRY)
            self._set_total(own, max(0, self._total(own) - 1))
        finally:
            self._unlock()

    def reset(self, slot: int) -> None:
        """The worker in `slot` is gone, and its connections with it: count none for it.
        Only the entries in use are written, so the pages of an empty table stay unallocated."""
        with self._locked():
            start = self._entries(slot)
            end = start + self._capacity * _ENTRY
            with memoryview(self._memory)[start:end] as table, table.cast("I") as words:
                counts = words[_KEY // 4 :: _ENTRY // 4].tolist()
            for index, count in enumerate(counts):
                if count:
                    _COUNT.pack_into(self._memory, start + index * _ENTRY + _KEY, 0)
            self._set_total(slot, 0)

    def connections(self, ip: IPAddress | None = None) -> int:
        """How many connections the serve holds (from `ip`, when given)."""
        with self._locked():
            if ip is None:
                return sum(self._total(r) for r in range(self._regions))
            key = _key(ip)
            home = self._home(key)
            return sum(self._find(r, key, home)[1] for r in range(self._regions))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock()
        try:
            yield
        finally:
            self._unlock()

    def _lock(self) -> None:
        # A record lock belongs to the process: workers exclude each other; inside one only
        # the event loop's thread counts, and it never yields while holding it.
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _own(self) -> int:
        if self._slot is None:
            raise RuntimeError("the supervisor's counts admit no connection")
        return self._slot

    def _home(self, key: bytes) -> int:
        # Kept per address: a keyed BLAKE2b is some 10,000 instructions, and every connection
        # asks twice (admit, release), mostly for addresses seen before.
        home = self._homes.get(key)
        if home is None:
            digest = hashlib.blake2b(key, digest_size=8, key=self._hash_key).digest()
            home = int.from_bytes(digest, "little") & (self._capacity - 1)
            if len(self._homes) >= _HOMES_KEPT:
                self._homes.clear()
            self._homes[key] = home
        return home

    def _base(self, region: int) -> int:
        return _HEADER_SIZE + region * self._region_size

    def _entries(self, region: int) -> int:
        return self._base(region) + _REGION_HEAD

    def _total(self, region: int) -> int:
        total: int = _COUNT.unpack_from(self._memory, self._base(region))[0]
        return total

    def _set_total(self, region: int, total: int) -> None:
        _COUNT.pack_into(self._memory, self._base(region), total)

    def _find(self, region: int, key: bytes, home: int) -> tuple[int, int]:
        """(offset, count) of `key`'s entry in `region`, or of the free entry where it would
        go (count 0). At most one lap: the region of a worker killed mid-write is read
        until the supervisor has zeroed it, and must not loop forever."""
        memory = self._memory
        entries = self._entries(region)
        mask = self._capacity - 1
        index = home
        for _ in range(self._capacity):
            at = entries + index * _ENTRY
            count: int = _COUNT.unpack_from(memory, at + _KEY)[0]
            if count == 0 or memory[at : at + _KEY] == key:
                return at, count
            index = (index + 1) & mask
        return entries + home * _ENTRY, 0

    def _remove(self, region: int, hole: int) -> None:
        """Free entry `hole`, moving back the entries after it that could not sit in their home
        while it was taken (backward-shift deletion: no tombstones, probes stay short)."""
        memory = self._memory
        entries = self._entries(region)
        mask = self._capacity - 1
        index = hole
        for _ in range(self._capacity):
            index = (index + 1) & mask
            at = entries + index * _ENTRY
            if _COUNT.unpack_from(memory, at + _KEY)[0] == 0:
                break
            home = self._home(memory[at : at + _KEY])
            # The entry stays if its home lies cyclically in (hole, index].
            if (hole < home <= index) if hole <= index else (home > hole or home <= index):
                continue
            to = entries + hole * _ENTRY
            memory[to : to + _ENTRY] = memory[at : at + _ENTRY]
            hole = index
        _COUNT.pack_into(memory, entries + hole * _ENTRY + _KEY, 0)
