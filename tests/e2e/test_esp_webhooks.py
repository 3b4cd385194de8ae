"""ESP webhooks in, with real signatures: an unsubscribe stops the next mail, a forged one is 401
and records nothing, `delivered` at the ESP shows in the timeline."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.test_http_api import send_json
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

MAILGUN_KEY = "mailgun-signing-key-0123456789"
POSTMARK_SECRET = "postmark-secret-0123456789abcdef"


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _server(sendguard: Start, key: ec.EllipticCurvePrivateKey) -> SendguardProcess:
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sendguard(
        policies=[{"plugin": "fatigue"}],
        esp={
            "sendgrid": {"webhook_public_key": base64.b64encode(public).decode()},
            "mailgun": {"webhook_signing_key": MAILGUN_KEY},
            "postmark": {
                "webhook_username": "pm",
                "webhook_password": "pm-password",
                "webhook_secret": POSTMARK_SECRET,
            },
        },
    )


def _post(proc: SendguardProcess, path: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{proc.http_port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _sendgrid(
    key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]]
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def _mailgun(
    event: dict[str, Any], timestamp: float | None = None, key: str = MAILGUN_KEY
) -> bytes:
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    token = "a" * 50
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": event,
        }
    ).encode()


def _timeline(proc: SendguardProcess, address: str) -> dict[str, Any]:
    status, body = proc.call("GET", f"/v1/recipients/{address}/timeline")
    assert status == 200
    return dict(body)


def test_sendgrid_unsubscribe_stops_the_next_mail_and_a_forgery_is_refused(
    sendguard: Start, sink: Sink, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    proc = _server(sendguard, signing_key)
    forger = ec.generate_private_key(ec.SECP256R1())
    body, headers = _sendgrid(
        forger,
        [{"email": "ana@example.org", "event": "unsubscribe", "timestamp": int(time.time())}],
    )
    assert _post(proc, "/v1/webhooks/sendgrid", body, headers)[0] == 401
    assert _post(proc, "/v1/webhooks/sendgrid", body, {})[0] == 401
    assert _timeline(proc, "ana@example.org")["suppression"] is None

    body, headers = _sendgrid(
        signing_key,
        [
            {"email": "ben@example.org", "event": "delivered", "timestamp": int(time.time())},
            {"email": "ana@example.org", "event": "unsubscribe", "timestamp": int(time.time())},
            {"email": "ana@example.org", "event": "processed", "timestamp": int(time.time())},
        ],
    )
    status, answer = _post(proc, "/v1/webhooks/sendgrid", body, headers)
    assert (status, answer) == (200, {"recorded": 2})
    assert _timeline(proc, "ana@example.org")["suppression"]["reason"] == "unsubscribe"
    assert [e["type"] for e in _timeline(proc, "ben@example.org")["events"]] == ["delivered"]

    sent = send_json(proc, to=["ana@example.org", "ben@example.org"], subject="Next", text="x")
    states = {d["recipient"]: d["state"] for d in sent["deliveries"]}
    assert states["ana@example.org"] == "dropped"
    proc.wait_states({"ben@example.org": "sent"})
    assert [r.rcpt_tos for r in sink.received] == [["ben@example.org"]]


def test_mailgun_signed_unsubscribe_stops_mail_forged_and_replayed_are_refused(
    sendguard: Start, sink: Sink, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    proc = _server(sendguard, signing_key)
    event = {"event": "unsubscribed", "recipient": "cy@example.org", "timestamp": time.time()}
    assert _post(proc, "/v1/webhooks/mailgun", _mailgun(event, key="forged"), {})[0] == 401
    replayed = _mailgun(event, timestamp=time.time() - 600)
    status, answer = _post(proc, "/v1/webhooks/mailgun", replayed, {})
    assert status == 401 and "5 minutes" in answer["error"]["message"]
    assert _timeline(proc, "cy@example.org")["suppression"] is None

    assert _post(proc, "/v1/webhooks/mailgun", _mailgun(event), {}) == (200, {"recorded": 1})
    bounce = {
        "event": "failed",
        "severity": "temporary",
        "recipient": "dee@example.org",
        "timestamp": time.time(),
    }
    assert _post(proc, "/v1/webhooks/mailgun", _mailgun(bounce), {})[1] == {"recorded": 1}
    assert _timeline(proc, "dee@example.org")["suppression"] is None  # soft bounces do not

    sent = send_json(proc, to=["cy@example.org"], subject="Next", text="x")
    assert sent["deliveries"][0]["state"] == "dropped"


def test_postmark_by_basic_auth_or_secret_path(
    sendguard: Start, sink: Sink, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    proc = _server(sendguard, signing_key)
    hard = json.dumps(
        {
            "RecordType": "Bounce",
            "Type": "HardBounce",
            "Email": "eve@example.org",
            "BouncedAt": "2026-01-05T10:00:00Z",
        }
    ).encode()
    wrong = base64.b64encode(b"pm:guess").decode()
    assert _post(proc, "/v1/webhooks/postmark", hard, {"Authorization": f"Basic {wrong}"})[0] == 401
    assert _post(proc, "/v1/webhooks/postmark", hard, {})[0] == 401
    assert _post(proc, "/v1/webhooks/postmark/not-the-secret-at-all", hard, {})[0] == 401
    assert _timeline(proc, "eve@example.org")["suppression"] is None

    good = base64.b64encode(b"pm:pm-password").decode()
    status, _ = _post(proc, "/v1/webhooks/postmark", hard, {"Authorization": f"Basic {good}"})
    assert status == 200
    assert _timeline(proc, "eve@example.org")["suppression"]["reason"] == "bounce"

    unsubscribe = json.dumps(
        {
            "RecordType": "SubscriptionChange",
            "Recipient": "fay@example.org",
            "SuppressSending": True,
        }
    ).encode()
    status, _ = _post(proc, f"/v1/webhooks/postmark/{POSTMARK_SECRET}", unsubscribe, {})
    assert status == 200
    sent = send_json(proc, to=["fay@example.org"], subject="Next", text="x")
    assert sent["deliveries"][0]["state"] == "dropped"
