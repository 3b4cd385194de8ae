"""The SMTP ingress alone on loopback, with an intake that accepts every message at once: for
tests of the protocol itself (timeouts, pipelining), not of what happens to a message."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from sendguard.config import SmtpOptions
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.metrics import Metrics


class AcceptingIntake:
    """Accepts every message as one forwarded message (no store, no policies)."""

    async def accept(self, *_: Any, **__: Any) -> SimpleNamespace:
        message = SimpleNamespace(id="01JD8ZT0000000000000000000")
        return SimpleNamespace(all_dropped=False, message=message, deliveries=())


@asynccontextmanager
async def connected(
    config: SmtpOptions,
) -> AsyncIterator[tuple[SmtpIngress, asyncio.StreamReader, asyncio.StreamWriter]]:
    """The ingress listening on a loopback port and one client connected to it, past the 220."""
    handler = SmtpHandler(AcceptingIntake(), config, Metrics())  # type: ignore[arg-type]
    ingress = SmtpIngress(handler, config)
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setblocking(False)
    await ingress.start([listening])
    reader, writer = await asyncio.open_connection(*listening.getsockname())
    try:
        assert (await reader.readline()).startswith(b"220")
        yield ingress, reader, writer
    finally:
        writer.close()
        await ingress.stop(0)
