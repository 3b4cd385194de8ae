"""The `outbox` upstream: each forwarded delivery becomes one .eml file, written atomically.

The file is named after the delivery id, so a delivery retried after a crash rewrites the same
file instead of producing a second one.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sendguard.delivery.upstream import Envelope
from sendguard.errors import UpstreamTransient


class OutboxUpstream:
    """Writes `<delivery id>.eml` under `path` with Return-Path and Delivered-To headers."""

    name = "outbox"

    def __init__(self, path: Path) -> None:
        self._path = path

    async def send(self, envelope: Envelope, content: bytes) -> None:
        await asyncio.to_thread(self._write, envelope, content)

    def _write(self, envelope: Envelope, content: bytes) -> None:
        final = self._path / f"{envelope.delivery_id}.eml"
        temp = self._path / f".{envelope.delivery_id}.tmp"
        prefix = (
            f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {envelope.recipient}\r\n"
        ).encode()
        try:
            self._path.mkdir(parents=True, exist_ok=True)
            with temp.open("wb") as handle:
                handle.write(prefix)
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            temp.replace(final)
            directory = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself must survive a crash
            finally:
                os.close(directory)
        except OSError as exc:
            raise UpstreamTransient(f"cannot write {final}: {exc.strerror}") from exc

    async def check(self) -> None:
        def probe() -> None:
            self._path.mkdir(parents=True, exist_ok=True)
            if not os.access(self._path, os.W_OK):
                raise UpstreamTransient(f"outbox {self._path} is not writable")

        try:
            await asyncio.to_thread(probe)
        except OSError as exc:
            raise UpstreamTransient(f"outbox {self._path}: {exc.strerror}") from exc

    async def close(self) -> None:
        return None
