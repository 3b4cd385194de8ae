"""One simulation for the server, in a process of its own: `python -m sendguard.simulate.worker`.

The server (`POST /v1/simulations`) runs the replay here, not on its event loop nor in one of
its threads: a replay is seconds of pure Python that would hold the GIL from SMTP and HTTP,
and a process can be stopped when it runs past `simulate.timeout`.

The job comes as one JSON object on stdin (so the store URL and its password never show in
`ps`): `config` (the candidate's YAML or JSON text, validated by the server already), `store`
(the server's `store` section as JSON), `since` and `until` (RFC 3339), `max_messages`. The
answer is one JSON object on stdout: `{"report": ..., "html": ...}` with exit status 0, or
`{"error": ...}` with exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from datetime import datetime
from typing import Any

from sendguard.config import StoreOptions, parse_config
from sendguard.errors import ConfigError, StoreUnavailable
from sendguard.logs import configure
from sendguard.simulate import simulate
from sendguard.simulate.command import read_source
from sendguard.simulate.render import html
from sendguard.simulate.source import RecordedMessage, SourceError


class TooLarge(SourceError):
    """The window holds more messages than `simulate.max_messages`."""


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Read the server's recorded window, replay it through the candidate, render."""
    candidate = parse_config(job["config"], "the candidate config")
    store = StoreOptions.model_validate(job["store"])
    since = datetime.fromisoformat(job["since"])
    until = datetime.fromisoformat(job["until"])
    items = await read_source(store, None, since, until)
    messages = sum(isinstance(i, RecordedMessage) for i in items)
    limit = int(job["max_messages"])
    if messages > limit:
        raise TooLarge(
            f"the window holds {messages} messages, more than simulate.max_messages ({limit});"
            " choose a shorter window (since, or from and to)"
        )
    report = await simulate(candidate, items, since, until)
    return {"report": report.to_json(), "html": html(report)}


def main() -> int:
    """Run the job on stdin; the answer on stdout."""
    configure(level="warning")  # stderr: only problems; the server logs them
    try:
        job = json.loads(sys.stdin.read())
        answer = asyncio.run(run_job(job))
    except (SourceError, ConfigError, StoreUnavailable, sqlite3.Error) as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return 2
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
