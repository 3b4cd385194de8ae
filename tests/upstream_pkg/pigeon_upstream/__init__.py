# pigeon_upstream/__init__.py
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sendguard.delivery.upstream import Envelope, Upstream
from sendguard.errors import UpstreamPermanent, UpstreamTransient


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loft: Path
    max_size: int = 1_000_000


class PigeonUpstream:
    """Leaves each message in the loft for the pigeons (one file per delivery)."""

    name = "pigeon"

    def __init__(self, options: Options) -> None:
        self._options = options

    async def send(self, envelope: Envelope, content: bytes) -> None:
        if len(content) > self._options.max_size:
            raise UpstreamPermanent("too heavy for a pigeon")
        try:
            (self._options.loft / f"{envelope.delivery_id}.eml").write_bytes(content)
        except OSError as exc:
            raise UpstreamTransient(f"the loft is closed: {exc}") from exc

    async def check(self) -> None:
        if not self._options.loft.is_dir():
            raise UpstreamTransient(f"no loft at {self._options.loft}")

    async def close(self) -> None:
        return None


def build(config: Any) -> Upstream:
    return PigeonUpstream(Options.model_validate(config.options))
