"""The application: owns every resource and background task, starts them in order and stops
them in reverse, draining in-flight work on SIGTERM.

Start: store (migrate, recover abandoned claims) → upstream → engine → dispatcher → SMTP → HTTP.
Stop:  HTTP → SMTP (finish sessions in DATA) → dispatcher (finish sends) → upstream → store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from contextlib import AsyncExitStack

import structlog

from sendguard import __version__
from sendguard.clock import Clock, SystemClock, monotonic
from sendguard.config import Config, OutboxUpstream, Settings
from sendguard.delivery.dispatcher import Dispatcher
from sendguard.delivery.outbox import OutboxUpstream as Outbox
from sendguard.delivery.smtp import SmtpUpstream
from sendguard.delivery.upstream import Upstream
from sendguard.engine import Engine, OnError, PolicyBinding
from sendguard.errors import StoreUnavailable
from sendguard.ingress.http import HttpIngress, build_app
from sendguard.ingress.http_context import Api
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.retention import Horizons, accepted_event_types
from sendguard.review import Review
from sendguard.review_page import install as install_review_page
from sendguard.store import open_store
from sendguard.store.base import Store
from sendguard.tokens import TOKEN_FILE_NAME, TokenSet, read_or_create_token

log = structlog.get_logger("sendguard.app")
PRUNE_INTERVAL = 3600.0


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_upstream(config: Config) -> Upstream:
    """The configured upstream."""
    up = config.upstream
    if isinstance(up, OutboxUpstream):
        return Outbox(up.path)
    return SmtpUpstream(
        up.host,
        up.port,
        starttls=up.starttls,
        tls_verify=up.tls_verify,
        tls_ca=str(up.tls_ca) if up.tls_ca else None,
        username=up.username,
        password=up.password,
        pool_size=up.pool_size,
        timeout=up.timeout,
        idle_timeout=up.idle_timeout,
    )


def build_policies(settings: Settings) -> list[PolicyBinding]:
    """Instantiate every configured policy with its validated options."""
    return [
        PolicyBinding(
            name=p.name,
            policy=p.cls(p.options),
            mode=p.config.mode,
            on_error=OnError(p.config.on_error),
            budget=p.config.budget,
        )
        for p in settings.policies
    ]


class App:
    """One sendguard process."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.smtp: SmtpIngress | None = None
        self.http: HttpIngress | None = None

    async def _prune(self, store: Store, horizons: Horizons) -> None:
        """Forget what no configured policy reads any more, and finished work older than
        `store.retention`, once an hour (suppressions are never pruned)."""
        while True:
            try:
                gone = await store.prune(horizons.cutoffs(self.clock.now()))
                log.info("retention: pruned", pruned_deliveries=gone, horizons=horizons.describe())
            except StoreUnavailable as exc:
                log.warning("pruning failed; retrying in an hour", error=str(exc))
            await asyncio.sleep(PRUNE_INTERVAL)

    def tokens(self, config: Config) -> TokenSet:
        """The configured API tokens, or the one kept in `http.token_file` (made if missing)."""
        if self.settings.api_tokens:
            return TokenSet(self.settings.api_tokens)
        token, created = read_or_create_token(config.http.token_file)
        log.info(
            "no http.api_tokens configured; using the token in the token file",
            token_file=str(config.http.token_file.resolve()),
            created=created,
        )
        return TokenSet([(TOKEN_FILE_NAME, token)])

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set, then drain and release everything."""
        config = self.settings.config
        drain = config.delivery.drain_timeout.total_seconds()
        async with AsyncExitStack() as stack:
            store = open_store(
                config.store.url,
                busy_timeout=config.store.busy_timeout,
                schema=config.store.schema_,
                pool_size=config.store.pool_size,
            )
            await store.open()
            stack.push_async_callback(store.close)
            recovered = await store.recover(self.clock.now())
            if recovered:
                log.info("recovered deliveries left claimed by a previous run", count=recovered)

            upstream = build_upstream(config)
            stack.push_async_callback(upstream.close)

            engine_policies = build_policies(self.settings)
            engine = Engine(
                engine_policies,
                store,
                self.clock,
                self.metrics,
                hold_expiry=config.review.hold_expiry,
            )
            dispatcher = Dispatcher(
                store,
                engine,
                upstream,
                self.clock,
                config.delivery,
                self.metrics,
                self.owner,
                review=config.review,
            )
            store.subscribe(dispatcher.wake)
            horizons = Horizons.of(config.store.retention, (b.policy for b in engine_policies))
            pruning = asyncio.create_task(self._prune(store, horizons), name="prune")
            stack.push_async_callback(_cancel, pruning)
            dispatching = asyncio.create_task(dispatcher.run(), name="dispatcher")

            async def stop_dispatcher() -> None:
                await dispatcher.stop()
                await dispatching

            stack.push_async_callback(stop_dispatcher)

            intake = Intake(
                engine,
                store,
                self.clock,
                self.metrics,
                config.headers.sources(),
                on_queued=dispatcher.wake,
                host_name=config.smtp.hostname,
            )
            self.smtp = SmtpIngress(SmtpHandler(intake, config.smtp, self.metrics), config.smtp)
            await self.smtp.start()
            stack.push_async_callback(self.smtp.stop, drain / 2)

            review = Review(store, self.clock, on_release=dispatcher.wake)
            context = Api(
                store,
                intake,
                review,
                upstream,
                self.metrics,
                self.clock,
                dispatcher.wake,
                config.http,
                accepted_event_types(b.policy for b in engine_policies),
            )
            web_app = build_app(context, self.tokens(config))
            install_review_page(web_app, config.review, self.clock)
            self.http = HttpIngress(web_app, config.http)
            await self.http.start()
            stack.push_async_callback(self.http.stop)

            log.info(
                "sendguard started",
                version=__version__,
                config=self.settings.source,
                smtp=config.smtp.listen,
                http=config.http.listen,
                store=config.store.url,
                upstream=config.upstream.kind,
                policies=[p.name for p in self.settings.policies],
            )
            if started is not None:
                started.set()
            await stop.wait()
            log.info("draining")
            began = monotonic()
        log.info("stopped", seconds=round(monotonic() - began, 3))
