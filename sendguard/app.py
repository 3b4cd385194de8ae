"""The application: owns every resource and background task, starts them in order and stops
them in reverse, draining in-flight work on SIGTERM.

Start: store (migrate, recover abandoned claims) → upstream → engine → dispatcher → webhook
sender → reloader → SMTP → HTTP.
Stop:  HTTP → SMTP (finish sessions in DATA) → reloader (finish a reload) → webhook sender →
dispatcher (finish sends) → upstream → store.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import structlog
from aiohttp import web

from sendguard import __version__
from sendguard.clock import Clock, SystemClock, monotonic
from sendguard.config import Config, Settings, UpstreamOptions
from sendguard.delivery.dispatcher import Dispatcher
from sendguard.delivery.routing import Routing, build_routing
from sendguard.delivery.upstream import Upstream, load_upstream_factory
from sendguard.engine import Engine, PolicyBinding
from sendguard.errors import StoreUnavailable
from sendguard.ingress.api_admin import RELOADER
from sendguard.ingress.api_simulations import SIMULATIONS
from sendguard.ingress.esp import install as install_esp
from sendguard.ingress.http import HttpIngress, build_app
from sendguard.ingress.http_context import Api
from sendguard.ingress.smtp import SmtpHandler, SmtpIngress
from sendguard.intake import Intake
from sendguard.metrics import Metrics
from sendguard.owner import process_owner
from sendguard.reload import Appliers, Loaded, Reloader, SwitchableUpstream
from sendguard.retention import Horizons, accepted_event_types
from sendguard.review import Review
from sendguard.review_page import install as install_review_page
from sendguard.review_page.notify import Notifier, public_url
from sendguard.review_page.pages import PAGE
from sendguard.secret import redacted
from sendguard.simulation_runs import Simulations
from sendguard.store import open_store
from sendguard.store.base import Store
from sendguard.store.sqlite import SQLiteStore
from sendguard.suppression_enforcement import SuppressionEnforcement
from sendguard.tokens import TOKEN_FILE_NAME, TokenSet, read_or_create_token
from sendguard.webhooks import WebhookSender
from sendguard.workers import ControlLine, Handoff

log = structlog.get_logger("sendguard.app")
PRUNE_INTERVAL = 3600.0


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_one_upstream(options: UpstreamOptions) -> Upstream:
    """One upstream, built by the factory its kind registers (built-ins too)."""
    return load_upstream_factory(options.kind)(options)


def build_upstream(config: Config) -> Routing:
    """The configured upstreams: `upstream:`, and the named ones `routes:` send through."""
    return build_routing(config, build_one_upstream)


def build_policies(settings: Settings) -> list[PolicyBinding]:
    """Instantiate every configured policy with its validated options."""
    return [
        PolicyBinding(
            name=p.name,
            policy=p.cls(p.options),
            mode=p.config.mode,
            on_error=p.config.on_error,
            budget=p.config.budget,
        )
        for p in settings.policies
    ]


def suppression_enforcement(engine: Engine) -> SuppressionEnforcement:
    """What the engine's policies, as configured now, do to mail for a suppressed address."""
    return SuppressionEnforcement.of((b.name, b.mode, b.policy) for b in engine.policies)


def event_types(engine: Engine) -> Callable[[], frozenset[str]]:
    """What `POST /v1/events` accepts under the engine's policies as configured now (a reload
    included). Worked out again only when a reload replaced them: some 30 µs with the shipped
    six policies (the isinstance checks against a Protocol), per request otherwise."""
    seen: tuple[object, frozenset[str]] = (None, frozenset())

    def current() -> frozenset[str]:
        nonlocal seen
        policies = engine.policies
        if policies is not seen[0]:
            seen = (policies, accepted_event_types(b.policy for b in policies))
        return seen[1]

    return current


class App:
    """One sendguard process."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        config_path: Path | None = None,
        config_digest: str = "",
        handoff: Handoff | None = None,
    ) -> None:
        """`config_path` is what a reload reads again (None: the embedded default);
        `config_digest` the sha256 of the text `settings` came from; `handoff` what this
        process inherits as a worker of `serve --workers N` (None: it runs alone)."""
        self.settings = settings
        self.clock = clock or SystemClock()
        self.handoff = handoff
        self.metrics = Metrics(Path(handoff.metrics_dir) if handoff is not None else None)
        self.owner = process_owner()
        self.smtp: SmtpIngress | None = None
        self.http: HttpIngress | None = None
        self.config_path = config_path
        self.config_digest = config_digest
        self.reloader: Reloader | None = None

    def on_sighup(self) -> None:
        """Reload the config (a no-op until the app runs)."""
        if self.reloader is not None:
            self.reloader.on_signal()

    async def _prune(self, store: Store, horizons: Callable[[], Horizons]) -> None:
        """Forget what no configured policy reads any more, and finished work older than
        `store.retention`, once an hour (suppressions are never pruned). The horizons are
        read each time: a reloaded policy that reads further back keeps its records."""
        while True:
            try:
                gone = await store.prune(horizons().cutoffs(self.clock.now()))
                log.info(
                    "retention: pruned", pruned_deliveries=gone, horizons=horizons().describe()
                )
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

    def _store(self, config: Config) -> Store:
        """The configured store, not yet open (a worker's with the supervisor's lock)."""
        store = open_store(config.store.url, config.store.settings())
        if self.handoff is not None and self.handoff.lock_fd is not None:
            # The supervisor locked it because the store is a SQLiteStore (lock_for_workers).
            assert isinstance(store, SQLiteStore)
            store.serve_as_worker(self.handoff.lock_fd)
        return store

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set, then drain and release everything."""
        config = self.settings.config
        drain = config.delivery.drain_timeout.total_seconds()
        async with AsyncExitStack() as stack:
            store = self._store(config)
            await store.open()
            stack.push_async_callback(store.close)
            recovered = await store.recover(self.clock.now())
            if recovered:
                log.info("recovered deliveries left claimed by a previous run", count=recovered)

            # A reload swaps the upstream behind this one; sends under way finish on theirs.
            upstream = SwitchableUpstream(build_upstream(config))
            stack.push_async_callback(upstream.close)
            self.metrics.expect_upstreams(m.label for m in upstream.routing.members())

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

            def horizons() -> Horizons:
                return Horizons.of(
                    config.store.retention,
                    (b.policy for b in engine.policies),
                    resend_window=config.smtp.resend_window,
                )

            pruning = asyncio.create_task(self._prune(store, horizons), name="prune")
            stack.push_async_callback(_cancel, pruning)
            dispatching = asyncio.create_task(dispatcher.run(), name="dispatcher")

            async def stop_dispatcher() -> None:
                await dispatcher.stop()
                await dispatching

            stack.push_async_callback(stop_dispatcher)

            webhooks = await self._start_webhooks(stack, store, config)

            intake = Intake(
                engine,
                store,
                self.clock,
                self.metrics,
                config.headers.sources(),
                on_queued=dispatcher.queued,
                host_name=config.smtp.hostname,
                claimer=dispatcher,
                resend_window=config.smtp.resend_window,
            )
            self.smtp = SmtpIngress(
                SmtpHandler(intake, config.smtp, self.metrics),
                config.smtp,
                self.handoff.connection_counts() if self.handoff else None,
            )
            await self.smtp.start(self.handoff.smtp_sockets() if self.handoff else ())
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
                event_types(engine),
                lambda: suppression_enforcement(engine),
            )
            web_app = build_app(context, self.tokens(config))
            install_review_page(web_app, config.review, self.clock)
            self.reloader = await self._reloader(
                stack, upstream, engine, intake, dispatcher, webhooks, web_app, store
            )
            web_app[RELOADER] = self.reloader
            # `serve` (and a worker, from its start) keeps SIGHUP blocked until a reload can
            # run: one sent meanwhile waits, pending, instead of ending or missing the process.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            web_app[SIMULATIONS] = await stack.enter_async_context(
                Simulations(config.store, store, self.clock, self.owner)
            )
            self._start_notifier(stack, store, upstream, config)
            install_esp(web_app, config.esp)
            self.http = HttpIngress(web_app, config.http)
            await self.http.start(self.handoff.http_socket() if self.handoff else None)
            stack.push_async_callback(self.http.stop)

            self._log_started(config, upstream, engine)
            if started is not None:
                started.set()
            await stop.wait()
            log.info("draining")
            began = monotonic()
        log.info("stopped", seconds=round(monotonic() - began, 3))

    def _log_started(self, config: Config, upstream: SwitchableUpstream, engine: Engine) -> None:
        """The start line; then, once (not once per worker), a warning when suppressions are
        only recorded (no enforcing policy drops mail for them), so nobody learns it from a
        complaint."""
        log.info(
            "sendguard started",
            version=__version__,
            config=self.settings.source,
            smtp=[f"{x.listen} ({x.tls})" for x in config.smtp.listeners_in_use()],
            http=config.http.listen,
            store=redacted(config.store.url),
            upstream=config.upstream.kind,
            upstreams=[m.label for m in upstream.routing.members()],
            policies=[p.name for p in self.settings.policies],
            config_hash=self.config_digest,
            loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],  # uvloop, asyncio
        )
        if self.handoff is not None and self.handoff.slot != 0:
            return
        warning = suppression_enforcement(engine).warning()
        if warning is not None:
            log.warning("suppressions are only recorded", detail=warning)

    def _start_notifier(
        self, stack: AsyncExitStack, store: Store, upstream: Upstream, config: Config
    ) -> None:
        """Tell reviewers about new holds, when `review.notify` says how; cancelled on the way
        out (a notice not yet sent is kept in the store and sent by the next run)."""
        notify = config.review.notify
        if not notify.enabled:
            return
        if config.http.trusted_proxies and not config.review.public_url:
            log.warning(
                "review.public_url is not set behind trusted proxies",
                detail="links in notifications point at http.listen, not at the proxy",
                listen=config.http.listen,
            )
        notifier = Notifier(
            store,
            upstream,
            self.clock,
            self.metrics,
            notify,
            public_url(config.review.public_url, config.http.listen),
            notify.webhook_url,
        )
        notifying = asyncio.create_task(notifier.run(), name="review-notify")
        stack.push_async_callback(_cancel, notifying)

    async def _start_webhooks(
        self, stack: AsyncExitStack, store: Store, config: Config
    ) -> WebhookSender:
        """Start posting lifecycle events; stopped (after the posts under way) on the way out."""
        webhooks = WebhookSender(
            store,
            self.clock,
            self.metrics,
            config.webhooks,
            self.owner,
            config.delivery.poll_interval,
        )
        posting = asyncio.create_task(webhooks.run(), name="webhooks")

        async def stop_webhooks() -> None:
            await webhooks.stop()
            await posting

        stack.push_async_callback(stop_webhooks)
        return webhooks

    def _certificates(self, config: Config) -> str | None:
        """Load the SMTP listeners' certificate again (a reload); its fingerprint."""
        if self.smtp is None:
            return None
        return self.smtp.reload_certificates(config.smtp.tls)

    async def _reloader(
        self,
        stack: AsyncExitStack,
        upstream: SwitchableUpstream,
        engine: Engine,
        intake: Intake,
        dispatcher: Dispatcher,
        webhooks: WebhookSender,
        web_app: web.Application,
        store: Store,
    ) -> Reloader:
        """The reloader, with how a new config reaches each running part and, in a worker of
        `serve --workers N`, every other worker (through the control line to the supervisor);
        closed with `stack`."""
        handoff = self.handoff
        control = (
            ControlLine(handoff.control_fd)
            if handoff is not None and handoff.control_fd is not None
            else None
        )

        def policies(settings: Settings) -> None:
            engine.reconfigure(build_policies(settings), settings.config.review.hold_expiry)

        def review(config: Config) -> None:
            web_app[PAGE].config = config.review

        appliers = Appliers(
            policies=policies,
            headers=lambda config: intake.reconfigure(config.headers.sources()),
            delivery=lambda config: dispatcher.reconfigure(config.delivery, config.review),
            review=review,
            webhooks=webhooks.reconfigure,
            upstream=build_upstream,
            certificates=self._certificates,
        )
        loaded = Loaded(self.settings, self.config_digest)
        reloader = Reloader(
            self.config_path,
            loaded,
            upstream,
            appliers,
            store,
            self.clock,
            self.metrics,
            siblings=control.reload_others if control is not None else None,
        )
        stack.push_async_callback(reloader.close)
        if control is not None:
            # A reload another worker did reaches this one through the supervisor.
            await control.start(reloader.follow)
            stack.push_async_callback(control.close)
        return reloader
