"""Work for `sendguard.offload.in_process` in tests: importable by name, as a worker process
needs it to be."""

from __future__ import annotations

import os


def pid(_: object) -> int:
    """The process this runs in."""
    return os.getpid()


def die_outside(parent: int) -> int:
    """End the process this runs in unless it is `parent`, as a crashing worker would."""
    if os.getpid() != parent:
        os._exit(1)
    return parent
