"""Work over a whole message, moved off the event loop when the message is large.

Parsing a 20 MB message with the `email` package takes seconds of pure Python. On the event
loop that would stall every SMTP session and HTTP request meanwhile; in a thread, the loop
keeps getting the interpreter between the parser's steps. Small messages stay on the loop,
where a thread hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LARGE", "over_content", "over_size"]

T = TypeVar("T")
A = TypeVar("A")

LARGE = 256 * 1024
"""Content above this many octets is worked on in a thread."""


async def over_content(work: Callable[[bytes], T], content: bytes) -> T:
    """`work(content)`, in a thread when `content` is LARGE."""
    return await over_size(len(content), work, content)


async def over_size(size: int, work: Callable[[A], T], argument: A) -> T:
    """`work(argument)`, in a thread when `size` (the length of what it works over) is LARGE."""
    if size <= LARGE:
        return work(argument)
    return await asyncio.to_thread(work, argument)
