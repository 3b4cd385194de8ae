"""How long `sendguard simulate` takes to replay recorded traffic. Usage:
    python bench/simulate.py [COUNT] [PEOPLE]      (defaults 100000 and 20000)

Generates COUNT one-recipient messages over 30 days to PEOPLE people in 20 campaigns and
replays them through the default caps, repetition and fatigue, as `sendguard simulate` would.
The default is a month of recorded traffic at 5 messages per person (docs/operations.md says
why); `100000 1000` is the extreme case of 100 per person against a cap of one a day.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta

from sendguard.config import parse_config
from sendguard.content import fingerprints
from sendguard.logs import configure
from sendguard.simulate import simulate
from sendguard.simulate.source import Recorded, RecordedMessage

START = datetime(2026, 11, 1, tzinfo=UTC)
# The typical what-if: the default caps, repetition and fatigue (no review hold, which would
# only hold every unapproved campaign).
CANDIDATE = """
policies:
  - plugin: schedule
  - plugin: context
  - plugin: frequency
  - plugin: repetition
  - plugin: fatigue
"""


def traffic(count: int, people: int = 20_000) -> list[Recorded]:
    """Messages as `--store` reads them: with the fingerprint the store took at intake."""
    step = timedelta(days=30) / count
    items: list[Recorded] = []
    for n in range(count):
        to = f"person{n % people}@example.org"
        content = (
            f"From: shop@example.com\r\nTo: {to}\r\nSubject: Offer {n}\r\n"
            f"X-Sendguard-Campaign: c{n % 20}\r\n\r\nHello {n}\r\n"
        ).encode()
        items.append(
            RecordedMessage(
                START + step * n,
                "shop@example.com",
                (to,),
                content,
                fingerprint=fingerprints(content),
            )
        )
    return items


async def main(count: int, people: int = 20_000) -> None:
    configure(level="warning")
    settings = parse_config(CANDIDATE, "bench candidate")
    items = traffic(count, people)
    started, cpu = time.perf_counter(), time.process_time()
    report = await simulate(settings, items)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # CPU time too: on a shared machine the wall time says more about the neighbours.
    print(
        f"replayed {count} messages in {seconds:.1f} s ({count / seconds:.0f}/s, CPU {cpu:.1f} s);"
        f" {len(report.changed)} decided differently, {len(report.replayed)} deliveries"
    )


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 20_000,
        )
    )
