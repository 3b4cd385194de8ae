"""Live reload: read the config again (SIGHUP or `POST /v1/admin/reload`) without a restart.

What a reload changes applies to every decision taken after it: policies and their options,
`headers`, `review`, `upstream`, `upstreams`, `routes`, `delivery` (but `workers`) and
`webhooks`; and the SMTP listeners' TLS certificate, read again from its files on every
reload (a renewed certificate in place) or from new `smtp.tls` paths. A decision, an SMTP
transaction, an HTTP request or a send under way finishes with what it started with, so none
fails across a reload. Listeners (`smtp`, `http`), the store and logging are bound at start: a
changed value there is named in the answer as needing a restart, and the running one stays.

A certificate that cannot be used is a config problem like any other (the reload is refused);
should the files change between the check and the load, the certificate in use stays and the
answer names the problem.

An invalid config is refused with the same field-path problems as `check-config`; the running
config stays. Every reload, accepted or refused, is audited with who asked and the new config's
sha256 (of the file's bytes, as `sha256sum` prints it), which `sendguard_config_info{hash}`
shows for the running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import BaseModel

from sendguard.audit import AuditEntry
from sendguard.clock import Clock
from sendguard.config import (
    Config,
    Settings,
    WebhookOptions,
    default_config_text,
    parse_config,
)
from sendguard.delivery.routing import Chosen, RouteKey, Routing
from sendguard.delivery.upstream import Envelope, Upstream
from sendguard.errors import ConfigError, ConfigProblem
from sendguard.metrics import Metrics
from sendguard.store.base import AuditLog
from sendguard.tls import CertificateError

log = structlog.get_logger("sendguard.reload")

LIVE_SECTIONS = (
    "policies",
    "headers",
    "review",
    "upstream",
    "upstreams",
    "routes",
    "delivery",
    "webhooks",
    "simulate",
)
"""What a reload applies at once."""
RESTART_SECTIONS = ("smtp", "http", "store", "log")
"""What is bound at start: a change here needs a restart."""


@dataclass(frozen=True)
class Loaded:
    """A validated config and the sha256 of the text it was read from."""

    settings: Settings
    digest: str


def read_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Loaded:
    """Read and validate `path` (the embedded default when None); raise ConfigError."""
    if path is None:
        text, source = default_config_text(), "the embedded default config"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")]) from None
        source = str(path)
    settings = parse_config(text, source, environ)
    return Loaded(settings, hashlib.sha256(text.encode("utf-8")).hexdigest())


def _differences(old: BaseModel, new: BaseModel, prefix: str) -> list[str]:
    return [
        f"{prefix}.{name}"
        for name in type(old).model_fields
        if getattr(old, name) != getattr(new, name)
    ]


def changed_sections(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(what a reload applies now, what needs a restart) of the differences, as field paths."""
    applied = [s for s in LIVE_SECTIONS if getattr(old, s) != getattr(new, s)]
    restart = [
        path
        for section in RESTART_SECTIONS
        for path in _differences(getattr(old, section), getattr(new, section), section)
    ]
    if old.delivery.workers != new.delivery.workers:
        restart.append("delivery.workers")
    return applied, restart


class SwitchableUpstream:
    """The upstreams the dispatcher and readiness see (a `Routing`); a reload swaps the
    whole set behind it.

    A send in flight finishes on the upstream it started on; a replaced upstream is closed
    when its last send returns (at once if none is in flight).
    """

    def __init__(self, routing: Routing | Upstream) -> None:
        self._current = routing if isinstance(routing, Routing) else Routing.single(routing)
        self.name = self._current.choose(None).label
        """The default upstream's label (what a notice or an unrouted send goes through)."""
        self._in_flight: dict[int, int] = {}
        self._retired: list[Upstream] = []

    @property
    def routing(self) -> Routing:
        """The set in use now."""
        return self._current

    @contextlib.asynccontextmanager
    async def chosen(self, key: RouteKey | None) -> AsyncIterator[Chosen]:
        """The upstream for `key` (None: the default), kept open while the block runs."""
        choice = self._current.choose(key)
        upstream = choice.upstream
        count = id(upstream)
        self._in_flight[count] = self._in_flight.get(count, 0) + 1
        try:
            yield choice
        finally:
            self._in_flight[count] -= 1
            if not self._in_flight[count]:
                del self._in_flight[count]
                if upstream in self._retired:
                    self._retired.remove(upstream)
                    await upstream.close()

    async def send(self, envelope: Envelope, content: bytes) -> None:
        """Send through the default upstream (review notices: no message to route by)."""
        async with self.chosen(None) as choice:
            await choice.upstream.send(envelope, content)

    async def check(self) -> None:
        """Readiness of every upstream in use."""
        await self._current.check()

    async def switch(self, routing: Routing | Upstream) -> None:
        """Send through `routing` from now on; close the old upstreams once each is idle."""
        old, self._current = (
            self._current,
            routing if isinstance(routing, Routing) else Routing.single(routing),
        )
        self.name = self._current.choose(None).label
        for member in old.members():
            if id(member.upstream) in self._in_flight:
                self._retired.append(member.upstream)
            else:
                await member.upstream.close()

    async def close(self) -> None:
        """Close the current upstreams and any replaced one still open."""
        retired, self._retired = self._retired, []
        for upstream in (*retired, *(m.upstream for m in self._current.members())):
            await upstream.close()


def _hold_expiry(loaded: Loaded) -> float:
    return loaded.settings.config.review.hold_expiry.total_seconds()


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did."""

    digest: str
    previous: str
    applied: Sequence[str]
    restart_required: Sequence[str]
    source: str
    certificate: str | None = None
    """The SHA-256 fingerprint of the TLS certificate new SMTP connections get (None: no TLS)."""
    certificate_problem: ConfigProblem | None = None
    """Why the new certificate could not be used (the one before stays), or None."""


@dataclass(frozen=True)
class Appliers:
    """How a new config reaches each running part (app.py wires them)."""

    policies: Callable[[Settings], None]
    headers: Callable[[Config], None]
    delivery: Callable[[Config], None]
    review: Callable[[Config], None]
    webhooks: Callable[[Sequence[WebhookOptions]], None]
    upstream: Callable[[Config], Routing | Upstream]
    certificates: Callable[[Config], str | None] = lambda _: None
    """Load the SMTP certificate again; its fingerprint, or None when no listener has TLS.
    Raises CertificateError (the certificate in use stays)."""


class Reloader:
    """Reads the config again and applies what can change while running."""

    def __init__(
        self,
        path: Path | None,
        loaded: Loaded,
        upstream: SwitchableUpstream,
        appliers: Appliers,
        store: AuditLog,
        clock: Clock,
        metrics: Metrics,
        environ: Mapping[str, str] | None = None,
        announce: Callable[[], None] | None = None,
    ) -> None:
        """`announce` is called after a reload asked for by a caller (not by SIGHUP)
        succeeds: a worker of `serve --workers N` tells its siblings through it."""
        self._path = path
        self._announce = announce
        self.current = loaded
        self._upstream = upstream
        self._apply = appliers
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._environ = environ
        self._lock = asyncio.Lock()
        self._signalled: set[asyncio.Task[None]] = set()
        metrics.set_config(loaded.digest, _hold_expiry(loaded))

    @property
    def settings(self) -> Settings:
        """The running settings."""
        return self.current.settings

    async def reload(self, actor: str) -> ReloadOutcome:
        """Read the config file again and apply it; raise ConfigError (nothing changes then)."""
        outcome = await self._reload(actor)
        if self._announce is not None:
            self._announce()
        return outcome

    async def _reload(self, actor: str) -> ReloadOutcome:
        async with self._lock:
            try:
                new = read_config(self._path, self._environ)
            except ConfigError as exc:
                await self._audit(actor, "reload-refused", f"{len(exc.problems)} problem(s): {exc}")
                log.warning("reload refused", actor=actor, problems=[str(p) for p in exc.problems])
                raise
            old = self.current
            applied, restart = changed_sections(old.settings.config, new.settings.config)
            self._apply_all(old.settings, new.settings, applied)
            if {"upstream", "upstreams", "routes"} & set(applied):
                await self._upstream.switch(self._apply.upstream(new.settings.config))
                self._metrics.expect_upstreams(m.label for m in self._upstream.routing.members())
            certificate, problem = self._reload_certificates(new.settings.config)
            if certificate is not None and "smtp.tls" in restart:
                restart.remove("smtp.tls")
                applied.append("smtp.tls")
            self.current = new
            self._metrics.set_config(new.digest, _hold_expiry(new))
            note = f"sha256 {new.digest}; applied: {', '.join(applied) or 'nothing changed'}"
            if restart:
                note += f"; restart needed for: {', '.join(restart)}"
            if problem is not None:
                note += f"; TLS certificate kept: {problem}"
            elif certificate is not None:
                note += f"; TLS certificate sha256 {certificate}"
            await self._audit(actor, "reload", note)
            log.info(
                "config reloaded",
                actor=actor,
                hash=new.digest,
                previous=old.digest,
                applied=applied,
                restart_required=restart,
                certificate=certificate,
            )
            return ReloadOutcome(
                new.digest,
                old.digest,
                applied,
                restart,
                new.settings.source,
                certificate,
                problem,
            )

    def _reload_certificates(self, config: Config) -> tuple[str | None, ConfigProblem | None]:
        """(fingerprint in use, why the new files were not taken or None)."""
        try:
            return self._apply.certificates(config), None
        except CertificateError as exc:
            log.warning("tls certificate not reloaded; the one in use stays", problem=str(exc))
            return exc.kept, exc.problem

    def _apply_all(self, old: Settings, new: Settings, applied: Sequence[str]) -> None:
        config = new.config
        if "policies" in applied or "review" in applied:
            self._apply.policies(new)
        if "headers" in applied:
            self._apply.headers(config)
        if "delivery" in applied or "review" in applied:
            self._apply.delivery(config)
        if "review" in applied:
            self._apply.review(config)
        if "webhooks" in applied:
            self._apply.webhooks(config.webhooks)
        del old

    def on_signal(self) -> None:
        """SIGHUP: reload in a task this reloader owns (awaited by `close`)."""
        task = asyncio.get_running_loop().create_task(self._signal_reload(), name="reload")
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    async def _signal_reload(self) -> None:
        with contextlib.suppress(ConfigError):  # logged and audited; the running config stays
            await self._reload("signal:SIGHUP")

    async def close(self) -> None:
        """Let a reload under way finish."""
        if self._signalled:
            await asyncio.gather(*self._signalled, return_exceptions=True)

    async def _audit(self, actor: str, action: str, note: str) -> None:
        await self._store.add_audit(
            AuditEntry(self._clock.now(), actor, action, "config", note[:2000], 1)
        )
