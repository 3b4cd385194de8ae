"""SendGrid-, Postmark- and Mailgun-compatible sending and their webhooks (docs/esp-compat.md).

Each ESP's routes authenticate on their own, in that ESP's scheme, and answer in its shapes;
the bearer-token middleware leaves them alone (see `authenticates_itself`).
"""

from __future__ import annotations

from aiohttp import web

from sendguard.config import EspOptions
from sendguard.ingress.esp import mailgun, postmark, sendgrid, webhooks
from sendguard.ingress.esp.mapping import ESP_CONFIG

__all__ = ["ESP_CONFIG", "add_routes", "authenticates_itself", "install"]

_OWN_AUTH_PREFIXES = ("/v3/", "/email", "/v1/webhooks/")


def authenticates_itself(path: str) -> bool:
    """True for the routes that check the ESP's own credentials or signatures."""
    return path.startswith(_OWN_AUTH_PREFIXES)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register every ESP route."""
    sendgrid.add_routes(router)
    postmark.add_routes(router)
    mailgun.add_routes(router)
    webhooks.add_routes(router)


def install(app: web.Application, config: EspOptions) -> None:
    """Give the ESP routes the `esp:` section of the config."""
    app[ESP_CONFIG] = config
