"""SendGrid-, Postmark- and Mailgun-compatible sending and their webhooks (docs/esp-compat.md).

Each ESP's routes authenticate on their own, in that ESP's scheme, and answer in its shapes;
their records in the route table (`sendguard.ingress.routes`) say so, and the bearer-token
middleware leaves them alone.
"""

from __future__ import annotations

from aiohttp import web

from sendguard.config import EspOptions
from sendguard.ingress.esp.mapping import ESP_CONFIG

__all__ = ["ESP_CONFIG", "install"]


def install(app: web.Application, config: EspOptions) -> None:
    """Give the ESP routes the `esp:` section of the config."""
    app[ESP_CONFIG] = config
