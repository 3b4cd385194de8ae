"""ESP webhooks in: `/v1/webhooks/{sendgrid,postmark,mailgun}`, each checked with the ESP's own
signature scheme before anything is read, then recorded as `POST /v1/events` records events.

- SendGrid: the signed Event Webhook; ECDSA P-256/SHA-256 over `timestamp + body`, verified
  with `esp.sendgrid.webhook_public_key` (the verification key SendGrid shows).
- Mailgun: HMAC-SHA256 of `timestamp + token` with `esp.mailgun.webhook_signing_key`; a
  timestamp more than 5 minutes away from now is a replay and refused.
- Postmark (which signs nothing): basic auth with `esp.postmark.webhook_username/password`,
  or the secret path `/v1/webhooks/postmark/<esp.postmark.webhook_secret>`.

Unsigned, badly signed, or not configured → 401 and nothing recorded. An unsubscribe,
complaint or hard bounce suppresses the address durably; waiting deliveries to the person
wake; `delivered` lands in the person's timeline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from sendguard.address import validate_address
from sendguard.errors import InvalidAddress
from sendguard.events import Event, EventType
from sendguard.identity import Identity, Role
from sendguard.ingress.esp.mapping import esp_config
from sendguard.ingress.http_context import IDENTITY_KEY, api
from sendguard.ingress.payloads import parse_json
from sendguard.suppressions import record_events

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

log = structlog.get_logger("sendguard.webhooks")

REPLAY_WINDOW = timedelta(minutes=5)
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


class Unauthorized(Exception):
    """The webhook did not prove where it came from."""


@dataclass(frozen=True)
class Incoming:
    """One ESP event as sendguard records it."""

    event: Event
    soft_bounce: bool = False


def _refused(reason: str) -> web.Response:
    body = {"error": {"code": "unauthorized", "message": reason}}
    return web.json_response(body, status=401)


def _at(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _event(
    kind: EventType, recipient: Any, at: Any, now: datetime, message_id: Any
) -> Event | None:
    if not isinstance(recipient, str):
        return None
    try:
        address = validate_address(recipient.strip())
    except InvalidAddress:
        return None
    return Event(kind, address, _at(at) or now, message_id if isinstance(message_id, str) else None)


# SendGrid -------------------------------------------------------------------------------------
def sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The public key as SendGrid shows it (base64 DER), or PEM."""
    # cryptography is imported by the first SendGrid webhook, not by every start (2 % of it).
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text.strip()))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise Unauthorized(f"esp.sendgrid.webhook_public_key cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Unauthorized("esp.sendgrid.webhook_public_key is not an ECDSA key")
    return key


def verify_sendgrid(key_text: str | None, headers: Any, body: bytes) -> None:
    """Raise Unauthorized unless the ECDSA signature over `timestamp + body` verifies."""
    if not key_text:
        raise Unauthorized("esp.sendgrid.webhook_public_key is not configured")
    signature, timestamp = headers.get(SENDGRID_SIGNATURE), headers.get(SENDGRID_TIMESTAMP)
    if not signature or not timestamp:
        raise Unauthorized(f"{SENDGRID_SIGNATURE} and {SENDGRID_TIMESTAMP} are required")
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 (see sendgrid_key)
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    try:
        raw_signature = base64.b64decode(signature, validate=True)
        sendgrid_key(key_text).verify(
            raw_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise Unauthorized("the SendGrid signature does not verify") from None


_SENDGRID_TYPES = {
    "delivered": EventType.DELIVERED,
    "open": EventType.OPEN,
    "click": EventType.CLICK,
    "spamreport": EventType.COMPLAINT,
    "unsubscribe": EventType.UNSUBSCRIBE,
    "group_unsubscribe": EventType.UNSUBSCRIBE,
    "group_resubscribe": EventType.RESUBSCRIBE,
}


def sendgrid_events(data: Any, now: datetime) -> list[Incoming]:
    """Events of a SendGrid Event Webhook batch (processed and unknown ones are skipped)."""
    out = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict):
            continue
        name, soft = item.get("event"), False
        kind = _SENDGRID_TYPES.get(str(name))
        if name == "bounce":
            kind, soft = EventType.BOUNCE, item.get("type") == "blocked"
        elif name == "deferred":
            kind, soft = EventType.BOUNCE, True
        elif name == "dropped":  # SendGrid's own suppression list speaks through the reason
            reason = str(item.get("reason", "")).lower()
            if "unsubscribed" in reason:
                kind = EventType.UNSUBSCRIBE
            elif "spam" in reason:
                kind = EventType.COMPLAINT
            else:
                kind, soft = EventType.BOUNCE, "bounced" not in reason and "invalid" not in reason
        if kind is None:
            continue
        message_id = item.get("sendguard_message_id")
        event = _event(kind, item.get("email"), item.get("timestamp"), now, message_id)
        if event is not None:
            out.append(Incoming(event, soft))
    return out


# Mailgun --------------------------------------------------------------------------------------
def verify_mailgun(key: str | None, data: Any, now: datetime) -> None:
    """Raise Unauthorized unless the HMAC verifies and the timestamp is within 5 minutes."""
    if not key:
        raise Unauthorized("esp.mailgun.webhook_signing_key is not configured")
    signed = data.get("signature") if isinstance(data, dict) else None
    if not isinstance(signed, dict):
        raise Unauthorized("the signature object is missing")
    timestamp, token, signature = (
        str(signed.get(k, "")) for k in ("timestamp", "token", "signature")
    )
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not timestamp or not hmac.compare_digest(expected, signature):
        raise Unauthorized("the Mailgun signature does not verify")
    try:
        sent = datetime.fromtimestamp(float(timestamp), UTC)
    except (ValueError, OverflowError):
        raise Unauthorized("the Mailgun timestamp is not a UNIX time") from None
    if abs(now - sent) > REPLAY_WINDOW:
        raise Unauthorized("the Mailgun timestamp is more than 5 minutes old (a replay?)")


_MAILGUN_TYPES = {
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPEN,
    "clicked": EventType.CLICK,
    "unsubscribed": EventType.UNSUBSCRIBE,
    "complained": EventType.COMPLAINT,
}


def mailgun_events(data: Any, now: datetime) -> list[Incoming]:
    """The event of a Mailgun webhook (`event-data`)."""
    item = data.get("event-data") if isinstance(data, dict) else None
    if not isinstance(item, dict):
        return []
    name, soft = item.get("event"), False
    kind = _MAILGUN_TYPES.get(str(name))
    if name == "failed":
        kind, soft = EventType.BOUNCE, item.get("severity") != "permanent"
    if kind is None:
        return []
    variables = item.get("user-variables")
    message_id = variables.get("sendguard_message_id") if isinstance(variables, dict) else None
    event = _event(kind, item.get("recipient"), item.get("timestamp"), now, message_id)
    return [] if event is None else [Incoming(event, soft)]


# Postmark -------------------------------------------------------------------------------------
def verify_postmark(request: web.Request) -> None:
    """Raise Unauthorized unless the basic auth or the secret path matches the config."""
    config = esp_config(request).postmark
    secret = request.match_info.get("secret")
    if secret is not None:
        if config.webhook_secret and hmac.compare_digest(secret, config.webhook_secret):
            return
        raise Unauthorized("the secret in the path is wrong")
    if config.webhook_username is None or config.webhook_password is None:
        raise Unauthorized("esp.postmark webhook credentials are not configured")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        given = b""
    expected = f"{config.webhook_username}:{config.webhook_password}".encode()
    if scheme.lower() != "basic" or not hmac.compare_digest(given, expected):
        raise Unauthorized("basic auth with the configured webhook credentials is required")


_POSTMARK_TYPES = {
    "Delivery": EventType.DELIVERED,
    "Open": EventType.OPEN,
    "Click": EventType.CLICK,
    "SpamComplaint": EventType.COMPLAINT,
}
_POSTMARK_HARD = frozenset(
    {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "Unsubscribe", "SpamNotification"}
)


def postmark_events(data: Any, now: datetime) -> list[Incoming]:
    """The event of a Postmark webhook (one per request)."""
    if not isinstance(data, dict):
        return []
    record = data.get("RecordType")
    kind, soft = _POSTMARK_TYPES.get(str(record)), False
    if record == "Bounce":
        kind, soft = EventType.BOUNCE, data.get("Type") not in _POSTMARK_HARD
    elif record == "SubscriptionChange":
        kind = EventType.UNSUBSCRIBE if data.get("SuppressSending") else EventType.RESUBSCRIBE
    if kind is None:
        return []
    recipient = data.get("Recipient") or data.get("Email")
    at = next(
        (data[k] for k in ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt") if data.get(k)),
        None,
    )
    metadata = data.get("Metadata")
    message_id = metadata.get("sendguard_message_id") if isinstance(metadata, dict) else None
    event = _event(kind, recipient, at, now, message_id)
    return [] if event is None else [Incoming(event, soft)]


# Recording ------------------------------------------------------------------------------------
async def record(request: web.Request, esp: str, incoming: Iterable[Incoming]) -> web.Response:
    """Record each event as `POST /v1/events` does; wake what waits on the people."""
    ctx = api(request)
    request[IDENTITY_KEY] = Identity(f"webhook:{esp}", Role.API)
    now = ctx.clock.now()
    items = [(item.event, item.soft_bounce) for item in incoming]
    if any(result.woken for result in await record_events(ctx.store, items, now)):
        ctx.wake()
    recorded = len(items)
    log.info("webhook recorded", esp=esp, events=recorded)
    return web.json_response({"recorded": recorded})


def _json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except (ValueError, UnicodeDecodeError):
        return None


async def sendgrid_webhook(request: web.Request) -> web.Response:
    """SendGrid's signed Event Webhook."""
    body = await request.read()
    try:
        verify_sendgrid(esp_config(request).sendgrid.webhook_public_key, request.headers, body)
    except Unauthorized as exc:
        return _refused(str(exc))
    return await record(request, "sendgrid", sendgrid_events(_json(body), api(request).clock.now()))


async def mailgun_webhook(request: web.Request) -> web.Response:
    """Mailgun's signed webhook (JSON)."""
    data = _json(await request.read())
    now = api(request).clock.now()
    try:
        verify_mailgun(esp_config(request).mailgun.webhook_signing_key, data, now)
    except Unauthorized as exc:
        return _refused(str(exc))
    return await record(request, "mailgun", mailgun_events(data, now))


async def postmark_webhook(request: web.Request) -> web.Response:
    """Postmark's webhook, by basic auth or secret path."""
    try:
        verify_postmark(request)
    except Unauthorized as exc:
        return _refused(str(exc))
    data = _json(await request.read())
    return await record(request, "postmark", postmark_events(data, api(request).clock.now()))
