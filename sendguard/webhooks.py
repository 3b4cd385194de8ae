"""Outbound lifecycle webhooks: one signed JSON POST per delivery state change.

The store writes an outbox row for each configured webhook that wants a state change, in the
transaction of the change itself, so an event is never lost and never announces a change that
was rolled back. This sender claims due rows (with a lease, so several instances share one
outbox), posts them, and deletes a row once the receiver answered 2xx. Anything else is retried
with backoff (`dispatcher.backoff`, between the webhook's `min_backoff` and `max_backoff`) until
the event is older than its `max_age` (24 h by default), then given up: logged and counted.
Only the oldest pending event of a delivery is claimable, so a receiver sees a delivery's events
in order. Delivery is at least once: a receiver deduplicates by the event `id`.

Signature: `X-Sendguard-Signature: t=<unix seconds>,v1=<hex>` where hex is
HMAC-SHA256(secret, "<t>." + body). `verify_signature` is the check a receiver runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
from collections.abc import Sequence
from datetime import timedelta

import aiohttp
import structlog

from sendguard import __version__
from sendguard.client_tls import load_certificates
from sendguard.clock import Clock
from sendguard.config import WebhookOptions
from sendguard.delivery.dispatcher import backoff
from sendguard.errors import StoreUnavailable
from sendguard.lifecycle import OutboundEvent, WebhookTarget
from sendguard.metrics import Metrics
from sendguard.store.base import WebhookOutbox

log = structlog.get_logger("sendguard.webhooks")

SIGNATURE_HEADER = "X-Sendguard-Signature"
BATCH = 32
LEASE = timedelta(minutes=2)
TOLERANCE = 300
"""Seconds a receiver should accept between the signature's time and its own clock."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Sendguard-Signature` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance: int = TOLERANCE
) -> bool:
    """True if `header` signs `body` with `secret` within `tolerance` seconds of `now`."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def targets_of(configs: Sequence[WebhookOptions]) -> list[WebhookTarget]:
    """What the store needs to know of the configured webhooks."""
    return [WebhookTarget(c.url, frozenset(c.events)) for c in configs]


def body_of(event: OutboundEvent) -> bytes:
    """The JSON body posted for an outbox row: its payload with the event's `id` first."""
    payload = json.loads(event.payload)
    return json.dumps(
        {"id": f"evt_{event.id}", **payload}, ensure_ascii=False, separators=(",", ":")
    ).encode()


class WebhookSender:
    """Posts outbox rows to their webhooks until stopped."""

    def __init__(
        self,
        store: WebhookOutbox,
        clock: Clock,
        metrics: Metrics,
        configs: Sequence[WebhookOptions],
        owner: str,
        poll_interval: timedelta,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._owner = owner
        self._poll = poll_interval.total_seconds()
        self._random = rng or random.Random()  # noqa: S311 - spreading retries, not secrecy
        self._stopping = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.reconfigure(configs)

    def reconfigure(self, configs: Sequence[WebhookOptions]) -> None:
        """Post to these webhooks from now on; the store writes events for them."""
        self._configs = {c.url: c for c in configs}
        self._store.set_webhook_targets(targets_of(configs))

    async def run(self) -> None:
        """Claim and post until `stop` is called."""
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"sendguard/{__version__}"}
        ) as session:
            self._session = session
            while not self._stopping.is_set():
                claimed: Sequence[OutboundEvent] = ()
                if self._configs:
                    load_certificates()  # sendguard/client_tls.py; at once after the first
                    try:
                        claimed = await self._store.claim_webhook_events(
                            self._clock.now(), self._owner, BATCH, LEASE
                        )
                    except StoreUnavailable as exc:
                        log.warning("claiming webhook events failed; retrying", error=str(exc))
                # Each claimed row is the head of its delivery's queue: they may go at once.
                results = await asyncio.gather(
                    *(self._post(e) for e in claimed), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException):
                        log.error("posting a webhook event failed", error=repr(result))
                if len(claimed) < BATCH:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def stop(self) -> None:
        """Stop claiming; `run` returns after the posts under way."""
        self._stopping.set()

    async def _post(self, event: OutboundEvent) -> None:
        config = self._configs.get(event.target)
        if config is None:
            log.warning(
                "webhook no longer configured; event discarded",
                url=event.target,
                delivery_id=event.delivery_id,
                lifecycle=event.event.value,
            )
            self._metrics.webhook_events.labels(outcome="abandoned").inc()
            await self._store.webhook_event_done(event.id)
            return
        body = body_of(event)
        now = self._clock.now()
        signature = sign(config.secret, int(now.timestamp()), body)
        error = await self._send(config, body, signature, event)
        if error is None:
            self._metrics.webhook_events.labels(outcome="sent").inc()
            await self._store.webhook_event_done(event.id)
            return
        wait = backoff(
            event.attempts + 1, config.min_backoff, config.max_backoff, self._random.random()
        )
        if now + wait - event.created_at > config.max_age:
            log.warning(
                "webhook event given up after max_age",
                url=config.url,
                delivery_id=event.delivery_id,
                lifecycle=event.event.value,
                attempts=event.attempts + 1,
                error=error,
            )
            self._metrics.webhook_events.labels(outcome="abandoned").inc()
            await self._store.webhook_event_done(event.id)
            return
        self._metrics.webhook_events.labels(outcome="retried").inc()
        log.info(
            "webhook event deferred",
            url=config.url,
            delivery_id=event.delivery_id,
            lifecycle=event.event.value,
            error=error,
            retry_in=wait.total_seconds(),
        )
        await self._store.webhook_event_retry(event.id, now + wait, error)

    async def _send(
        self, config: WebhookOptions, body: bytes, signature: str, event: OutboundEvent
    ) -> str | None:
        """Post; None on a 2xx answer, else what went wrong."""
        assert self._session is not None
        try:
            async with self._session.post(
                config.url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: signature,
                    "X-Sendguard-Event-Id": f"evt_{event.id}",
                },
                timeout=aiohttp.ClientTimeout(total=config.timeout.total_seconds()),
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
