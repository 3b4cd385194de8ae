"""An aiosmtpd sink on loopback that records what it receives and answers as scripted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)
    """When it arrived (time.monotonic)."""

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content)


class _Handler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[str] = []
        self.delay = 0.0
        self._releases = 0  # `release` ends the delays of the DATA in progress
        self.lock = threading.Lock()
        self.ehlos = 0

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.ehlos += 1
        return responses

    def release(self) -> None:
        """Answer the DATA commands waiting out `delay` now (later ones wait as set)."""
        self._releases += 1

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrived = time.monotonic()
        if self.delay:
            until, releases = arrived + self.delay, self._releases
            while releases == self._releases and (left := until - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 0.05))
        with self.lock:
            reply = self.replies.pop(0) if self.replies else "250 2.0.0 Ok"
            if reply.startswith("250"):
                self.received.append(
                    Received(
                        envelope.mail_from or "",
                        list(envelope.rcpt_tos),
                        envelope.original_content or b"",
                        list(envelope.mail_options),
                        arrived,
                    )
                )
        return reply


class Sink:
    """A real SMTP server in a thread. `script(...)` sets the next replies to DATA."""

    def __init__(self, port: int, **smtp_options: Any) -> None:
        self.handler = _Handler()
        self.port = port
        self._options = smtp_options
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **self._options
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def script(self, replies: Iterable[str]) -> None:
        with self.handler.lock:
            self.handler.replies = list(replies)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least `count` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"sink got {len(self.received)} messages, expected {count}")
