"""What the SMTP ingress alone costs per session, as smtp-source makes them.

    .venv/bin/python bench/ingress_cost.py [SESSIONS]

`SmtpIngress` on loopback under uvloop with an intake that accepts every message at once (no
store, no policies), and in the same process clients that talk as `make bench`'s smtp-source
does: one message per connection, each command after the reply to the last (no pipelining),
10 sessions at a time, the 2 KB newsletter. Prints the process CPU time per session (the
clients' included). For instructions per session, run it under `valgrind --tool=callgrind`
with two numbers of sessions (say 100 and 400) and divide the difference of the totals by 300.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's sendguard
from bench.run import SMALL, crlf, newsletter
from sendguard.config import SmtpOptions
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.metrics import Metrics
from tests.support.smtp_ingress import AcceptingIntake

BODY = crlf(newsletter(SMALL))
COMMANDS = (
    b"EHLO client.example\r\n",
    b"MAIL FROM:<news@example.com>\r\n",
    b"RCPT TO:<reader@example.org>\r\n",
    b"DATA\r\n",
    BODY + b".\r\n",
    b"QUIT\r\n",
)


async def session(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)

    async def reply() -> None:
        while (await reader.readline())[3:4] == b"-":
            pass

    await reply()  # the greeting
    for command in COMMANDS:
        writer.write(command)
        await reply()
    writer.close()
    await writer.wait_closed()


async def main(sessions: int) -> None:
    config = SmtpOptions(hostname="bench.example")
    ingress = SmtpIngress(SmtpHandler(AcceptingIntake(), config, Metrics()), config)  # type: ignore[arg-type]
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setblocking(False)
    await ingress.start([listening])
    host, port = listening.getsockname()[:2]
    slots = asyncio.Semaphore(10)

    async def one() -> None:
        async with slots:
            await session(host, port)

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(sessions)))
    spent = time.process_time() - started
    await ingress.stop(0)
    print(f"{spent / max(sessions, 1) * 1e6:.0f} us of CPU per session over {sessions} sessions")


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
