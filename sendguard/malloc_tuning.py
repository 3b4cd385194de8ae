"""glibc's allocator kept from handing memory back to the kernel after every short burst.

glibc gives each thread that allocates its own arena, and trims an arena's top as soon as more
than `M_TRIM_THRESHOLD` (128 KiB) of it is free: `madvise(MADV_DONTNEED)`, then a page fault
for each page the next allocation touches again. An idle `serve` does exactly that for every
message: the SQLite writer thread builds a batch, frees it, the arena is trimmed, and the next
batch faults its pages in again (`perf` on the writer thread: page faults and the `madvise`
about a tenth of its samples). Under load the arenas stay in use and nothing changes.

A threshold of 4 MiB (what `MALLOC_TRIM_THRESHOLD_=4194304` in the environment sets) keeps up
to 4 MiB free at the top of each arena. It also fixes the threshold above which allocations
are mapped on their own at glibc's initial 128 KiB (glibc otherwise raises it after freeing a
large block): 100 KB messages cost the same CPU per message either way
(docs/performance.md, "Added latency at idle").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
"""`mallopt`'s parameter number for the trim threshold (malloc.h)."""
TRIM_THRESHOLD = 4 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set glibc's trim threshold to `TRIM_THRESHOLD` for this process (and the processes it
    forks); False where the C library is not glibc, or the environment already chose one."""
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the operator's choice stands
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has a mallopt that does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
