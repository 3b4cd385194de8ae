"""Who holds a claim: `host:pid` of the sendguard process that made it.

A claim (a delivery or webhook event being worked on) names its owner, so that a process that
starts can tell the claims of a process that is gone (released at once) from those of a
sibling worker that is still running (left alone).
"""

from __future__ import annotations

import os
import socket


def process_owner() -> str:
    """The owner name of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(owner: str) -> bool:
    """Whether `owner` is certainly no running process of this host.

    An owner of another host, or one this cannot read, counts as running: its claims are
    taken over when their lease ends instead.
    """
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user: alive
        return False
    return False
