"""Instructions (or CPU) per decision of `bench/policy_cost.py`'s judged loop alone, and the
decisions themselves, to compare two checkouts on the same data.

Usage:
  python bench/policy_decisions.py fill DB N
  python bench/policy_decisions.py judge DB [--decisions K] [--warm W] [--dump FILE]

`fill` builds a store of N prior deliveries as `bench/policy_cost.py` does (its seeded `fill`,
the schema of the `sendguard` this interpreter imports) and keeps the people to judge beside it
(DB.judged.json). `judge` opens it, makes W decisions of warm-up, then judges K deliveries (the
people kept, round the list) with fixed ids, so that two checkouts' decisions can be compared
line by line: with `--dump`, one JSON line per judged delivery (the combined verdict, its until
and explanation, every policy's verdict, until, reason, `wakes_on`, mode and error). stderr gets
the process CPU µs per judged decision.

Instructions per decision: run `judge` under `valgrind --tool=callgrind` with two values of K on
copies of the same filled store (`PYTHONHASHSEED=0`); the difference of the totals over the
difference of K. The judged loop alone, in about a twelfth of the time (session 14): `judge
--gate FILE` under `valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no
--toggle-collect=functools_reduce`; after the warm-up it prints `ready PID` and waits for FILE
to exist (run `callgrind_control -i on PID`, then create FILE), then steps the K decisions
to their ends inside one `functools.reduce` (on the SQLite store no decision suspends): the
total over K. Another checkout's code runs with `PYTHONPATH=OTHER:LINKS` (as
bench/callgrind_serve.py says), from a directory outside this checkout; `fill` then writes that
checkout's schema.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import sendguard
from sendguard import logs
from sendguard.app import build_policies
from sendguard.config import load_config
from sendguard.engine import Engine
from sendguard.headers import Headers
from sendguard.message import Delivery, DeliveryState, Message, SendguardFields
from sendguard.metrics import Metrics
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
CONTENT = b"Subject: Offer\r\n\r\nhi\r\n"


def _policy_cost() -> ModuleType:
    """bench/policy_cost.py of the checkout whose `sendguard` is imported (its `fill` writes
    that checkout's tables)."""
    path = Path(sendguard.__file__).resolve().parents[1] / "bench" / "policy_cost.py"
    spec = importlib.util.spec_from_file_location("policy_cost_of_checkout", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def fill(path: Path, n: int) -> None:
    store = SQLiteStore(path)
    await store.open()  # creates the schema
    await store.close()
    recipients = _policy_cost().fill(path, n)
    path.with_name(path.name + ".judged.json").write_text(
        json.dumps({"n": n, "recipients": recipients})
    )


def _verdict(verdict: Any) -> dict[str, Any]:
    return {
        "action": str(getattr(verdict.action, "value", verdict.action)),
        "reason": verdict.reason,
        "until": verdict.until.isoformat() if verdict.until else None,
        "wakes_on": list(getattr(verdict, "wakes_on", ())),
    }


def _decision(delivery_id: str, decision: Any) -> str:
    return json.dumps(
        {
            "delivery": delivery_id,
            "verdict": _verdict(decision.verdict),
            "explanation": decision.explanation,
            "outcomes": [
                {
                    "policy": o.policy,
                    "verdict": _verdict(o.verdict),
                    "mode": str(getattr(o.mode, "value", o.mode)),
                    "error": o.error,
                }
                for o in decision.outcomes
            ],
        },
        sort_keys=True,
    )


def _stepped(coroutine: Any) -> Any:
    """The result of a coroutine that finishes without suspending."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a decision suspended: --gate needs a store whose reads finish at once")


def _gated(gate: Path, engine: Engine, judged: list[Delivery]) -> None:
    """The judged decisions inside one functools.reduce, once `gate` exists (see the module)."""
    print("ready", os.getpid(), flush=True)
    while not gate.exists():
        sum(range(10_000))  # busy: valgrind reads callgrind_control's command while it runs
    functools.reduce(lambda _, d: _stepped(engine.decide(d, CONTENT)), judged, None)


async def judge(
    path: Path, decisions: int, warm: int, dump: bool, gate: Path | None = None
) -> list[str]:
    """Judge as the module says; the decisions as JSON lines when `dump`."""
    logs.configure("info", "json")  # as `serve` logs when not on a terminal (stderr)
    recipients = json.loads(path.with_name(path.name + ".judged.json").read_text())["recipients"]
    store = SQLiteStore(path)
    await store.open()
    engine = Engine(build_policies(load_config(None)), store, FakeClock(NOW), Metrics())
    message = Message(
        "bench-message",
        NOW,
        "bench",
        "s@example.com",
        tuple(recipients[:1]),
        Headers((("Subject", "Offer"),)),
        SendguardFields(campaign="c7"),
        100,
        "h1",
    )

    def delivery(i: int) -> Delivery:
        recipient = recipients[i % len(recipients)]
        return Delivery(f"d-{i:08d}", message, recipient, DeliveryState.QUEUED, NOW, NOW)

    for i in range(warm):  # the first people of the list, judged again below
        await engine.decide(delivery(i), CONTENT)
    judged = [delivery(i) for i in range(decisions)]
    if gate is not None:
        _gated(gate, engine, judged)
        await store.close()
        return []
    lines = []
    cpu = time.process_time()
    for d in judged:
        decision = await engine.decide(d, CONTENT)
        if dump:
            lines.append((d.id, decision))
    cpu = time.process_time() - cpu
    await store.close()
    print(f"cpu {cpu / max(1, decisions) * 1e6:.1f} µs per decision", file=sys.stderr)
    return [_decision(i, d) + "\n" for i, d in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fill")
    f.add_argument("db", type=Path)
    f.add_argument("n", type=int)
    j = sub.add_parser("judge")
    j.add_argument("db", type=Path)
    j.add_argument("--decisions", type=int, default=2000)
    j.add_argument("--warm", type=int, default=100)
    j.add_argument("--dump", type=Path)
    j.add_argument("--gate", type=Path, help="the judged loop alone, under callgrind (see above)")
    args = parser.parse_args()
    if args.command == "fill":
        asyncio.run(fill(args.db, args.n))
    else:
        lines = asyncio.run(
            judge(args.db, args.decisions, args.warm, args.dump is not None, args.gate)
        )
        if args.dump is not None:
            args.dump.write_text("".join(lines))


if __name__ == "__main__":
    main()
