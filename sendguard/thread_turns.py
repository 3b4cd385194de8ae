"""Prompt turns at the GIL for the other threads while the event loop works through a large
message.

A large message's steps on the loop (its DATA form for the upstream, in pieces) keep the
loop's thread busy for tens of milliseconds at a time, yielding only to the loop. Every other
thread that needs the GIL meanwhile (the SQLite writer between the statements of a small
message's commit, the readers) gets it only when the loop's thread has held it for a whole
switch interval (`sys.getswitchinterval()`, 5 ms): a commit that needs it ten times waits
about 50 ms, and the small message's 250 with it (`make bench`'s p99 of small messages while
a 20 MB one is forwarded was that wait). While `prompt_turns` is held, the interval is
`PROMPT` instead. It is not shortened for good: at full load of small messages, the loop's
thread and the writer's then hand the GIL to each other ten times as often, which cost about a
fifth more CPU a message (measured with `bench/cpu_per_message.py`).

Held by code on the event loop's thread only; nested and overlapping holds (two large
messages at once) keep it short until the last is left. A step that waits for a client
(reading a large message's DATA) holds it only while the data comes without waiting
(`PromptWhileBusy`): a client that trickles its data must not keep the whole process on the
short interval, and while the loop waits the other threads have the GIL anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["PROMPT", "PromptWhileBusy", "prompt_turns"]

PROMPT = 0.0005
"""The switch interval, in seconds, while a large message's steps run on the loop."""

_held = 0
_normal = 0.0


@contextmanager
def prompt_turns() -> Iterator[None]:
    """Shorten the switch interval to `PROMPT` until the block is left (the last of several)."""
    global _held, _normal  # noqa: PLW0603 - one interval per process
    if _held == 0:
        _normal = sys.getswitchinterval()
        sys.setswitchinterval(min(_normal, PROMPT))
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0:
            sys.setswitchinterval(_normal)


class PromptWhileBusy:
    """`prompt_turns` held while `busy(True)` was said last, released at `busy(False)` and
    when the block is left."""

    def __init__(self) -> None:
        self._held: AbstractContextManager[None] | None = None

    def busy(self, busy: bool) -> None:
        """Hold the short interval from now on (True) or no longer (False)."""
        if busy and self._held is None:
            self._held = prompt_turns()
            self._held.__enter__()
        elif not busy and self._held is not None:
            held, self._held = self._held, None
            held.__exit__(None, None, None)

    def __enter__(self) -> PromptWhileBusy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.busy(False)
