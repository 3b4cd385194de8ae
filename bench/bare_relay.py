"""The baseline: a bare pass-through relay, aiosmtpd in, pooled aiosmtplib out.

No store, no policy, no durability: what Python can do on this machine. Usage:
    python bench/bare_relay.py LISTEN_PORT UPSTREAM_PORT [POOL]
"""

from __future__ import annotations

import asyncio
import sys

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session


class Pool:
    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self.slots = asyncio.Semaphore(size)

    async def send(self, sender: str, rcpts: list[str], content: bytes) -> None:
        async with self.slots:
            client = self.idle.get_nowait() if not self.idle.empty() else None
            if client is None or not client.is_connected:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, start_tls=False)
                await client.connect()
            try:
                await client.sendmail(sender, rcpts, content)
            except BaseException:
                client.close()
                raise
            self.idle.put_nowait(client)


class Relay:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def handle_DATA(  # noqa: N802 - aiosmtpd calls the hook by this name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        try:
            await self.pool.send(
                envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b""
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.3.0 upstream: {exc}"
        return "250 2.0.0 Ok: relayed"


async def main(listen: int, upstream: int, size: int) -> None:
    relay = Relay(Pool(upstream, size))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(relay, hostname="bare", data_size_limit=33_554_432), "127.0.0.1", listen
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20)
    )
