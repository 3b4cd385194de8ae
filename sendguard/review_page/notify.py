"""Reviewer notifications: tell people when a campaign is first held, and while work waits.

Every `check_every` the notifier asks the store for the held queue's groups (one aggregate).
A campaign with held deliveries that was not noted before is *first held*: the store notes it
once across every instance sharing it (`notice_held`), and the reviewers get a message with
the reason and a link to the page. A campaign with nothing held any more is forgotten, so
when it is held again, that is a first hold again. While anything is held, a digest goes out
every `digest_every`.

A message goes to a webhook (JSON `{"text": ...}`, which Slack and Mattermost incoming
webhooks accept) and/or by e-mail straight through the configured upstream: never through
the engine, so sendguard's own policies cannot hold the message that asks to review held
mail. A failed send is retried with doubling backoff up to `give_up_after` and counted
(`sendguard_review_notifications_total{channel, outcome}`); the notifier runs as a task of its
own, so nothing it does waits on, or holds up, sending. A first-held notice not yet sent when
the process stops is sent by the next start (the store keeps it until `notice_sent`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote, urlencode

import aiohttp
import structlog

from sendguard.client_tls import load_certificates
from sendguard.clock import Clock
from sendguard.config import ReviewNotifyOptions
from sendguard.delivery.upstream import Envelope, Upstream
from sendguard.errors import StoreUnavailable, UpstreamPermanent, UpstreamTransient
from sendguard.ids import new_id
from sendguard.metrics import Metrics
from sendguard.phrasing import human_duration
from sendguard.review_page.pages import reasons_of
from sendguard.review_queue import HeldGroup, HeldQuery
from sendguard.store.base import Store

log = structlog.get_logger("sendguard.review.notify")

_DIGEST_LISTED = 10


class NotifyFailed(Exception):
    """A notification could not be sent; `permanent` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class Outgoing:
    """One notification on one channel, until it is sent or given up."""

    channel: str
    target: str
    """The webhook, or the one address an e-mail goes to."""
    subject: str
    text: str
    link: str
    campaign: str | None
    """The first-held campaign it announces; None for a digest."""
    first: bool
    created: datetime
    due: datetime
    attempts: int = 0


@dataclass
class _Pending:
    """First-held notices in flight, by campaign: how many channels are still due."""

    channels: dict[str | None, int] = field(default_factory=dict)


def _label(campaign: str | None) -> str:
    return f"campaign {campaign}" if campaign else "mail of no campaign"


class Notifier:
    """Tells reviewers about held mail; `run` until cancelled."""

    def __init__(
        self,
        store: Store,
        upstream: Upstream,
        clock: Clock,
        metrics: Metrics,
        config: ReviewNotifyOptions,
        public_url: str,
        webhook_url: str | None,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._clock = clock
        self._metrics = metrics
        self._config = config
        self._base = public_url.rstrip("/")
        self._webhook = webhook_url
        self._outbox: list[Outgoing] = []
        self._pending = _Pending()
        self._next_digest: datetime | None = None
        self._session: aiohttp.ClientSession | None = None
        self._recovered = False

    @property
    def targets(self) -> tuple[tuple[str, str], ...]:
        """(channel, target) of everyone to tell: the webhook, each e-mail address."""
        hook = (("webhook", self._webhook),) if self._webhook else ()
        return hook + tuple(("email", address) for address in self._config.email_to)

    async def run(self) -> None:
        """Check and send every `check_every`, until cancelled."""
        try:
            while True:
                try:
                    await self.tick()
                except StoreUnavailable as exc:
                    log.warning("review notifications: store unavailable", error=str(exc))
                await asyncio.sleep(self._config.check_every.total_seconds())
        finally:
            if self._session is not None:
                await self._session.close()

    async def tick(self) -> None:
        """Note first holds, queue what is to be said, send what is due."""
        now = self._clock.now()
        queue = await self._store.held_queue(HeldQuery(limit=0))
        held = [g.campaign for g in queue.groups]
        if not self._recovered:
            # Notices a previous run noted but did not get out: announce them now.
            self._recovered = True
            for notice in await self._store.review_notices():
                if notice.sent_at is None and notice.campaign in held:
                    await self._announce(notice.campaign, queue.groups, now)
        await self._store.forget_notices(held)
        for campaign in await self._store.notice_held(held, now):
            await self._announce(campaign, queue.groups, now)
        self._digest(queue.groups, queue.total, now)
        await self._send_due(now)

    async def _announce(
        self, campaign: str | None, groups: Sequence[HeldGroup], now: datetime
    ) -> None:
        if campaign in self._pending.channels:
            return
        group = next((g for g in groups if g.campaign == campaign), None)
        count = group.count if group is not None else 0
        reason = await self._reason(campaign, sum(g.count for g in groups))
        link = self._link(campaign)
        subject = f"sendguard: {_label(campaign)} is held for review"
        text = f"{subject}: {count} {'delivery' if count == 1 else 'deliveries'}"
        text += f" ({reason})" if reason else ""
        self._queue(subject, text, link, campaign, now, first=True)

    async def _reason(self, campaign: str | None, total: int) -> str:
        """Why the newest held delivery of the campaign is held, in words."""
        found = await self._store.held_queue(
            HeldQuery(campaign=campaign, limit=1)
            if campaign is not None
            # mail of no campaign comes last in the queue
            else HeldQuery(limit=1, offset=max(0, total - 1))
        )
        shown = [d for d in found.deliveries if d.campaign == campaign]
        if not shown:
            return ""
        records = await self._store.delivery_records([shown[0].id])
        reasons, _ = reasons_of(shown[0], records[shown[0].id])
        return "; ".join(reasons)

    def _link(self, campaign: str | None) -> str:
        if campaign is None:
            return f"{self._base}/review"
        return f"{self._base}/review?{urlencode({'campaign': campaign}, quote_via=quote)}"

    def _digest(self, groups: Sequence[HeldGroup], total: int, now: datetime) -> None:
        every = self._config.digest_every
        if every is None:
            return
        if self._next_digest is None:
            self._next_digest = now + every
            return
        if now < self._next_digest:
            return
        self._next_digest = now + every
        if total == 0:
            return
        oldest = min(g.oldest for g in groups)
        listed = ", ".join(
            f"{g.campaign or 'no campaign'} {g.count}" for g in groups[:_DIGEST_LISTED]
        )
        if len(groups) > _DIGEST_LISTED:
            listed += f" and {len(groups) - _DIGEST_LISTED} more campaigns"
        subject = f"sendguard: {total} held deliveries wait for review"
        text = (
            f"{subject} in {len(groups)} {'campaign' if len(groups) == 1 else 'campaigns'}"
            f" (oldest held {human_duration(now - oldest)} ago): {listed}"
        )
        self._queue(subject, text, f"{self._base}/review", None, now, first=False)

    def _queue(
        self,
        subject: str,
        text: str,
        link: str,
        campaign: str | None,
        now: datetime,
        *,
        first: bool,
    ) -> None:
        targets = self.targets
        if first:
            self._pending.channels[campaign] = len(targets)
        for channel, target in targets:
            self._outbox.append(
                Outgoing(channel, target, subject, text, link, campaign, first, now, now)
            )

    async def _send_due(self, now: datetime) -> None:
        due = [o for o in self._outbox if o.due <= now]
        for item in due:
            try:
                await self._send(item)
            except NotifyFailed as exc:
                item.attempts += 1
                late = now - item.created >= self._config.give_up_after
                if exc.permanent or late:
                    self._metrics.review_notifications.labels(item.channel, "failed").inc()
                    log.warning(
                        "review notification given up",
                        channel=item.channel,
                        attempts=item.attempts,
                        error=str(exc),
                    )
                    await self._done(item)
                    continue
                self._metrics.review_notifications.labels(item.channel, "retried").inc()
                wait = retry_delay(self._config, item.attempts)
                item.due = now + wait
                log.info(
                    "review notification failed; retrying",
                    channel=item.channel,
                    retry_in=human_duration(wait),
                    error=str(exc),
                )
            else:
                self._metrics.review_notifications.labels(item.channel, "sent").inc()
                log.info("review notification sent", channel=item.channel, subject=item.subject)
                await self._done(item)

    async def _done(self, item: Outgoing) -> None:
        self._outbox.remove(item)
        if not item.first:
            return
        left = self._pending.channels.get(item.campaign, 1) - 1
        if left > 0:
            self._pending.channels[item.campaign] = left
            return
        self._pending.channels.pop(item.campaign, None)
        with contextlib.suppress(StoreUnavailable):
            await self._store.notice_sent(item.campaign, self._clock.now())

    async def _send(self, item: Outgoing) -> None:
        if item.channel == "webhook":
            await self._post(item.target, f"{item.text}. Review: {item.link}")
        else:
            await self._mail(item.target, item.subject, f"{item.text}.\n\nReview: {item.link}")

    async def _post(self, url: str, text: str) -> None:
        if self._session is None:
            load_certificates()  # sendguard/client_tls.py
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.timeout.total_seconds())
            )
        try:
            async with self._session.post(url, json={"text": text}) as response:
                if response.status >= 300:
                    body = (await response.text())[:200]
                    # A 4xx other than 429 will not get better by asking again.
                    permanent = 400 <= response.status < 500 and response.status != 429
                    raise NotifyFailed(
                        f"webhook answered {response.status}: {body}", permanent=permanent
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyFailed(f"webhook unreachable: {exc or type(exc).__name__}") from exc

    async def _mail(self, recipient: str, subject: str, text: str) -> None:
        sender = self._config.email_from
        message = EmailMessage()
        message["From"] = sender
        message["To"] = recipient
        message["Subject"] = subject
        message["Date"] = format_datetime(self._clock.now())
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text + "\n")
        # Straight to the upstream: sendguard's policies never judge (or hold) this message.
        envelope = Envelope(sender, recipient, f"notice-{new_id()}")
        try:
            await self._upstream.send(envelope, message.as_bytes())
        except UpstreamTransient as exc:
            raise NotifyFailed(f"upstream deferred the e-mail: {exc}") from exc
        except UpstreamPermanent as exc:
            raise NotifyFailed(f"upstream refused the e-mail: {exc}", permanent=True) from exc
        except OSError as exc:
            raise NotifyFailed(f"upstream unreachable: {exc}") from exc


def public_url(configured: str | None, listen: str) -> str:
    """Where the page is reached: the configured URL, else the HTTP listen address."""
    return configured.rstrip("/") if configured else f"http://{listen}"


def retry_delay(config: ReviewNotifyOptions, attempts: int) -> timedelta:
    """The wait before retry number `attempts` (1-based): doubling, capped."""
    wait: timedelta = config.retry_min * 2 ** min(max(0, attempts - 1), 32)
    return min(config.retry_max, wait)
