"""Factories of the built-in upstream kinds, registered under `sendguard.upstreams` in
pyproject.toml exactly as a third-party upstream registers its own."""

from __future__ import annotations

from sendguard.config import EspUpstreamOptions, OutboxUpstreamOptions, SmtpUpstreamOptions
from sendguard.delivery.esp_upstreams import MailgunUpstream, PostmarkUpstream, SendgridUpstream
from sendguard.delivery.outbox import OutboxUpstream as Outbox
from sendguard.delivery.smtp import SmtpUpstream as Smtp
from sendguard.delivery.upstream import Upstream


def outbox(config: OutboxUpstreamOptions) -> Upstream:
    """`kind: outbox`."""
    return Outbox(config.path)


def smtp(config: SmtpUpstreamOptions) -> Upstream:
    """`kind: smtp`."""
    return Smtp(
        config.host,
        config.port,
        starttls=config.starttls,
        implicit_tls=config.tls == "implicit",
        tls_verify=config.tls_verify,
        tls_ca=str(config.tls_ca) if config.tls_ca else None,
        username=config.username,
        password=config.password,
        pool_size=config.pool_size,
        timeout=config.timeout,
        idle_timeout=config.idle_timeout,
    )


def sendgrid(config: EspUpstreamOptions) -> Upstream:
    """`kind: sendgrid`."""
    return SendgridUpstream(
        config.api_key,
        base_url=config.base_url or "https://api.sendgrid.com",
        timeout=config.timeout,
        pool_size=config.pool_size,
    )


def postmark(config: EspUpstreamOptions) -> Upstream:
    """`kind: postmark`."""
    return PostmarkUpstream(
        config.api_key,
        base_url=config.base_url or "https://api.postmarkapp.com",
        message_stream=config.message_stream,
        timeout=config.timeout,
        pool_size=config.pool_size,
    )


def mailgun(config: EspUpstreamOptions) -> Upstream:
    """`kind: mailgun`."""
    assert config.domain is not None  # the config model requires it for mailgun
    return MailgunUpstream(
        config.api_key,
        config.domain,
        base_url=config.base_url or "https://api.mailgun.net",
        timeout=config.timeout,
        pool_size=config.pool_size,
    )
