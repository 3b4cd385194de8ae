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

In a worker of `serve --workers N`, a reload (asked over the API, or SIGHUP passed on by the
supervisor) is followed by every other worker before it is answered and audited, once; the
outcome lists each worker's result (`sendguard.workers` carries the asks and answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from pydantic import BaseModel

from sendguard.audit import AuditEntry
from sendguard.client_tls import https_possible, load_certificates
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
    if https_possible(settings):
        load_certificates()  # before a client it configures speaks HTTPS (sendguard/client_tls.py)
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
class WorkerReload:
    """What one worker process made of a reload."""

    pid: int
    reloaded: bool
    """Whether it runs the config it read now (False: refused, or no answer)."""
    hash: str | None
    """The sha256 of the config it read (None: none read)."""
    error: str | None = None
    """Why it did not reload, or what it kept (a TLS certificate it could not use)."""

    def as_dict(self) -> dict[str, object]:
        """The JSON form (the control channel and the API answer)."""
        return {"pid": self.pid, "reloaded": self.reloaded, "hash": self.hash, "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> WorkerReload:
        """From the JSON form."""
        pid, reloaded, digest, error = (data.get(k) for k in ("pid", "reloaded", "hash", "error"))
        return cls(
            int(pid) if isinstance(pid, int) else 0,
            reloaded is True,
            digest if isinstance(digest, str) else None,
            error if isinstance(error, str) else None,
        )


Siblings = Callable[[str], Awaitable[Sequence[WorkerReload]]]
"""How a worker of `serve --workers N` has every other worker reload (as `actor`) and
learns what each made of it."""


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
    workers: Sequence[WorkerReload] = ()
    """Every process's result, this one's first (one entry when sendguard runs alone)."""

    @property
    def everywhere(self) -> bool:
        """Whether every worker reloaded, and to this config."""
        return all(w.reloaded and w.hash == self.digest for w in self.workers)


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
        siblings: Siblings | None = None,
    ) -> None:
        """`siblings`: in a worker of `serve --workers N`, how the other workers are made to
        reload once this one has (None: this process runs alone)."""
        self._path = path
        self._siblings = siblings
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
        """Read the config file again and apply it; raise ConfigError (nothing changes then).

        In a worker of `serve --workers N`, every other worker then reloads too, and this
        returns once each has answered (or could not): the outcome lists every worker's
        result, and the one audit entry of this reload names any worker that did not."""
        outcome, note = await self._reload(actor)
        if self._siblings is not None:
            others = await self._siblings(actor)
            outcome = replace(outcome, workers=(*outcome.workers, *others))
            failed = [
                f"worker {w.pid}: {w.error or 'not reloaded'}"
                if not w.reloaded
                else f"worker {w.pid}: read sha256 {w.hash}"
                for w in others
                if not w.reloaded or w.hash != outcome.digest
            ]
            note += f"; {len(outcome.workers)} workers"
            if failed:
                note += f"; NOT reloaded everywhere: {'; '.join(failed)}"
                log.error("reload incomplete", actor=actor, workers=failed)
        await self._audit(actor, "reload", note)
        return outcome

    async def follow(self, actor: str) -> WorkerReload:
        """Reload because a sibling worker did (asked by `actor`); that worker audits it."""
        try:
            outcome, _ = await self._reload(actor, audit_refusal=False)
        except ConfigError as exc:
            return WorkerReload(os.getpid(), False, None, f"refused: {exc}")
        problem = outcome.certificate_problem
        return WorkerReload(
            os.getpid(),
            True,
            outcome.digest,
            f"TLS certificate kept: {problem}" if problem is not None else None,
        )

    async def _reload(self, actor: str, audit_refusal: bool = True) -> tuple[ReloadOutcome, str]:
        """Read and apply the file: the outcome and the audit note it is worth (the caller
        audits it); a refusal is audited here (unless `audit_refusal` is False) and raised."""
        async with self._lock:
            try:
                new = read_config(self._path, self._environ)
            except ConfigError as exc:
                if audit_refusal:
                    await self._audit(
                        actor, "reload-refused", f"{len(exc.problems)} problem(s): {exc}"
                    )
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
            log.info(
                "config reloaded",
                actor=actor,
                hash=new.digest,
                previous=old.digest,
                applied=applied,
                restart_required=restart,
                certificate=certificate,
            )
            outcome = ReloadOutcome(
                new.digest,
                old.digest,
                applied,
                restart,
                new.settings.source,
                certificate,
                problem,
                (
                    WorkerReload(
                        os.getpid(),
                        True,
                        new.digest,
                        f"TLS certificate kept: {problem}" if problem is not None else None,
                    ),
                ),
            )
            return outcome, note

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
            await self.reload("signal:SIGHUP")

    async def close(self) -> None:
        """Let a reload under way finish."""
        if self._signalled:
            await asyncio.gather(*self._signalled, return_exceptions=True)

    async def _audit(self, actor: str, action: str, note: str) -> None:
        await self._store.add_audit(
            AuditEntry(self._clock.now(), actor, action, "config", note[:2000], 1)
        )
