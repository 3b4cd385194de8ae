"""aiohttp's default client TLS context, made without the system's CA certificates when this
server can make no HTTPS request, given them before the first client that can.

`aiohttp.connector` makes two default `SSLContext`s when it is imported (on purpose, off the
event loop), each loading the system CA bundle: 15 % of a `serve` start's instructions
(docs/performance.md, "Server start cost"), paid by a relay whose upstream is SMTP and which
never speaks HTTPS. `serve` reads its config first: when nothing it configures can make an
HTTPS request (`https_possible`), aiohttp is imported with the bundle out of sight
(`import_aiohttp`) and its verified context starts empty. `load_certificates` gives it the
system's certificates (honouring SSL_CERT_FILE and SSL_CERT_DIR, as the import would have):
every client of sendguard's own (the ESP upstreams, outbound webhooks, review notifications)
calls it before it opens a session, and a config read later (a reload) that can make HTTPS
requests calls it too (`sendguard.reload.read_config`), so third-party code it brings finds the
certificates as well. A config with anything not built in (a policy, store or upstream of a
third party, which may speak HTTPS as it likes) loads them at the import, as before.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sendguard.config.load import Settings

__all__ = ["https_possible", "import_aiohttp", "load_certificates"]

_ENVIRON = ("SSL_CERT_FILE", "SSL_CERT_DIR")
_NOWHERE = "/nonexistent/sendguard-certificates-later"

_BUILT_IN_POLICIES = ("sendguard_plugins.", "sendguard.")
_BUILT_IN_STORES = ("sqlite", "postgres", "postgresql")
_NO_HTTPS_UPSTREAMS = ("outbox", "smtp")

_state = {"deferred": False}


def https_possible(settings: Settings) -> bool:
    """Whether the server `settings` configure may make an HTTPS request through aiohttp's
    default context: an ESP or third-party upstream, a webhook, review notifications by webhook,
    a policy or store that is not built in."""
    config = settings.config
    upstreams = [config.upstream, *config.upstreams.values()]
    if any(upstream.kind not in _NO_HTTPS_UPSTREAMS for upstream in upstreams):
        return True
    if config.webhooks or config.review.notify.webhook_url is not None:
        return True
    if config.store.url.split(":", 1)[0].lower() not in _BUILT_IN_STORES:
        return True
    return not all(p.cls.__module__.startswith(_BUILT_IN_POLICIES) for p in settings.policies)


def import_aiohttp(certificates: bool) -> None:
    """Import aiohttp; without `certificates`, with its default contexts left empty (once,
    in a process that has not imported it yet) until `load_certificates`. With
    `certificates`, its verified context holds them on return, even where an earlier call
    imported it without (a process forked after that import, as the suite's servers are)."""
    if certificates or "aiohttp" in sys.modules:
        import aiohttp  # noqa: PLC0415

        if certificates:
            load_certificates()
        return
    saved = {name: os.environ.get(name) for name in _ENVIRON}
    os.environ.update(dict.fromkeys(_ENVIRON, _NOWHERE))
    try:
        import aiohttp  # noqa: F401, PLC0415
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    _state["deferred"] = True


def load_certificates() -> None:
    """Give aiohttp's verified default context the system's CA certificates, if it was made
    without them; at once otherwise. Call it before a client that may speak HTTPS starts."""
    if not _state["deferred"]:
        return
    _state["deferred"] = False
    import aiohttp.connector  # noqa: PLC0415

    context = getattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", None)
    if isinstance(context, ssl.SSLContext):
        context.set_default_verify_paths()
    # `_SSL_CONTEXT_UNVERIFIED` verifies no peer: it needs no certificates.
