"""What one send through the SMTP upstream costs sendguard: CPU time and Python calls per send.

    .venv/bin/python bench/upstream_cost.py [--sends N] [--concurrency C] [--size BYTES]
        [--sink postfix|aiosmtpd] [--no-pipelining] [--profile]

`SmtpUpstream.send` of the checkout this file is in (so a second checkout measures its own
code), on uvloop as `serve` runs it, `C` sends at a time (the dispatcher's default workers)
into Postfix's `smtp-sink` (a separate process: its CPU is not counted) or an aiosmtpd sink
in a thread (counted: compare only like with like). Each send is one delivery of `make
bench`'s 2 KB newsletter to another person. After a warm-up of 200 sends, `N` more: prints
the user + system CPU time of this process per send (µs) and, with `--profile`, Python
function calls per send (cProfile) and the profile's top entries. `--no-pipelining` starts
smtp-sink with `-p` (it then does not offer PIPELINING).

For instructions per send, run it twice under `valgrind --tool=callgrind` with two values of
`--sends` and divide the difference of the totals by the difference of the sends (start-up
and warm-up cancel out).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run  # make bench's helpers: the traffic, free ports
from sendguard.delivery.smtp import SmtpUpstream
from sendguard.delivery.upstream import Envelope

WARM_UP = 200


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sends(upstream: SmtpUpstream, first: int, count: int, concurrency: int) -> None:
    content = run.crlf(run.newsletter(run.SMALL))
    numbers = iter(range(first, first + count))

    async def worker() -> None:
        for n in numbers:
            envelope = Envelope("news@example.com", f"reader{n}@example.org", f"d{n}")
            await upstream.send(envelope, content)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(port: int, args: argparse.Namespace) -> None:
    upstream = SmtpUpstream(
        "127.0.0.1",
        port,
        starttls="never",
        pool_size=20,
        timeout=timedelta(seconds=30),
    )
    try:
        await sends(upstream, 0, WARM_UP, args.concurrency)
        profile = cProfile.Profile() if args.profile else None
        before = cpu_seconds()
        if profile is not None:
            profile.enable()
        await sends(upstream, WARM_UP, args.sends, args.concurrency)
        if profile is not None:
            profile.disable()
        spent = cpu_seconds() - before
    finally:
        await upstream.close()
    print(f"{spent / args.sends * 1e6:.1f} µs CPU per send over {args.sends} sends")
    if profile is not None:
        stats = pstats.Stats(profile)
        calls = stats.total_calls  # type: ignore[attr-defined]
        print(f"{calls / args.sends:.1f} Python calls per send", file=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)


def aiosmtpd_sink(port: int) -> object:
    from aiosmtpd.controller import Controller  # noqa: PLC0415 - only for this sink

    class Discard:
        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: object, session: object, envelope: object
        ) -> str:
            return "250 2.0.0 Ok"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sink", choices=("postfix", "aiosmtpd"), default="postfix")
    parser.add_argument("--no-pipelining", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 - as serve runs it

    port = run.free_port()
    with tempfile.TemporaryDirectory(prefix="sendguard-upstream-cost-") as tmp:
        if args.sink == "postfix":
            flags = ["-p"] if args.no_pipelining else []
            out = (Path(tmp) / "sink.out").open("wb")
            sink = subprocess.Popen(
                ["smtp-sink", *flags, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1024"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            run.wait_port(port)
            try:
                uvloop.run(measure(port, args))
                time.sleep(0.5)  # smtp-sink prints its counters when a session ends
            finally:
                sink.terminate()
                sink.wait()
            found = re.findall(rb"mesg=(\d+)", (Path(tmp) / "sink.out").read_bytes())
            received = int(found[-1]) if found else 0
            print(f"smtp-sink received {received} of {WARM_UP + args.sends}")
        else:
            controller = aiosmtpd_sink(port)
            try:
                uvloop.run(measure(port, args))
            finally:
                controller.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
