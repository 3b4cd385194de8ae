"""What the HTTP ESP upstreams (sendgrid, postmark, mailgun) share: one aiohttp session with
reused connections, a request timeout, and one mapping of answers onto the upstream contract.

- 2xx: taken.
- 429: transient, retried no sooner than `Retry-After` says (seconds or an HTTP date).
- 5xx, timeouts, refused or dropped connections: transient, retried with the usual backoff.
- 401/403: transient too: our key is wrong, not the message; keep the mail until the
  operator fixes `upstream.api_key`, rather than fail it all.
- any other 4xx: permanent, with the ESP's own message kept in the delivery's reason.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from sendguard.client_tls import load_certificates
from sendguard.errors import UpstreamPermanent, UpstreamTransient

READY_FOR = 30.0
"""Seconds an answer from the ESP (a probe or an accepted send) counts for readiness."""


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header (delay-seconds or an HTTP date) as a duration."""
    if not value:
        return None
    if value.strip().isdigit():
        return timedelta(seconds=int(value.strip()))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def esp_message(body: Any, text: str) -> str:
    """The ESP's own words from an error body (SendGrid errors[], Postmark Message, Mailgun
    message), else the raw text."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict))
        for key in ("Message", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return text.strip()[:500]


def classify(status: int, body: Any, text: str, headers: Mapping[str, str], where: str) -> None:
    """Return for a 2xx; raise the upstream error an answer means otherwise."""
    if 200 <= status < 300:
        return
    message = f"{where} answered {status}: {esp_message(body, text)}"
    if status == 429:
        wait = retry_after(headers.get("Retry-After"), datetime.now(UTC))
        raise UpstreamTransient(message, code=status, retry_after=wait)
    if status >= 500:
        raise UpstreamTransient(message, code=status)
    if status in (401, 403):
        raise UpstreamTransient(f"{message}; check upstream.api_key", code=status)
    raise UpstreamPermanent(message, code=status)


class HttpUpstream:
    """Base of the ESP upstreams: subclasses build the request, this class sends it."""

    name = "http"

    def __init__(self, base_url: str, *, timeout: timedelta, pool_size: int) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout.total_seconds())
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._answered_at: float | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None:
            load_certificates()  # sendguard/client_tls.py
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                timeout=self._timeout,
            )
        return self._session

    async def request(
        self,
        path: str,
        *,
        headers: Mapping[str, str],
        json_body: Any = None,
        data: aiohttp.FormData | None = None,
        auth: aiohttp.BasicAuth | None = None,
    ) -> Any:
        """POST to the ESP; the parsed JSON answer, or the upstream error it means."""
        url = self._base + path
        try:
            async with self._client().post(
                url, headers=headers, json=json_body, data=data, auth=auth
            ) as response:
                text = await response.text(errors="replace")
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                classify(response.status, body, text, response.headers, f"{self.name} {url}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamTransient(f"{self.name} {url}: {type(exc).__name__}: {exc}") from exc
        self._answered_at = time.monotonic()
        return body

    async def check(self) -> None:
        if self._answered_at is not None and time.monotonic() - self._answered_at < READY_FOR:
            return
        try:
            async with self._client().get(self._base + "/") as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamTransient(
                f"{self.name} at {self._base} did not answer: {type(exc).__name__}: {exc}"
            ) from exc
        self._answered_at = time.monotonic()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
