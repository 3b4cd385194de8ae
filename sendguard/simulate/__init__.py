"""What-if replay: recorded traffic through a candidate config, and what would differ.

`source` reads the traffic (a store, JSONL, mbox), `replay` runs it through the real Intake
and Engine with a simulated clock in a scratch store, `report` compares, `render` shows.
"""

from __future__ import annotations

from datetime import datetime

from sendguard.app import build_policies
from sendguard.config import Settings
from sendguard.simulate.replay import Replay, Replayed
from sendguard.simulate.report import Report
from sendguard.simulate.source import Recorded, SourceError, at_of

__all__ = ["Recorded", "Replayed", "Report", "SourceError", "simulate"]


async def simulate(
    candidate: Settings,
    items: list[Recorded],
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Replay the items of [since, until) through `candidate`'s policies and compare.

    Events after the window still count as engagement with mail inside it.
    """
    window = [
        i
        for i in items
        if (since is None or at_of(i) >= since)
        and (until is None or at_of(i) < until or not _is_message(i))
    ]
    rows = await Replay(candidate, build_policies(candidate)).run(window, until)
    return Report.of(rows, since, until)


def _is_message(item: Recorded) -> bool:
    from sendguard.simulate.source import RecordedMessage  # noqa: PLC0415

    return isinstance(item, RecordedMessage)
