"""The `sendgrid`, `postmark` and `mailgun` upstreams: each delivery leaves as one API call
for its one recipient, carrying the rendered message, or — when the message came in through
the same ESP's endpoint — the client's own request narrowed to that recipient
(`send_request`, see `sendguard.delivery.passthrough`).

Mailgun takes the MIME as it is (`messages.mime`). SendGrid and Postmark take JSON, so the
message is read back into subject, text, HTML, attachments and its other headers; headers the
ESPs set themselves (From, To, Subject, Content-Type, ...) are not repeated. Each call carries
`sendguard_delivery_id` (a SendGrid custom arg, Postmark Metadata, Mailgun variable), so the
ESP's webhooks can be tied back to the delivery.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import aiohttp

from sendguard.delivery import passthrough
from sendguard.delivery.http_upstream import HttpUpstream
from sendguard.delivery.upstream import Envelope
from sendguard.errors import UpstreamPermanent
from sendguard.esp_request import EspRequest
from sendguard.offload import in_process

_OWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "received",
        "dkim-signature",
        "x-sg-id",
        "x-sg-eid",
        "return-path",
        "delivered-to",
    }
)


class Parsed:
    """The parts of a rendered message an ESP's JSON API asks for.

    Parsing is pure Python over the whole message: above offload.LARGE it runs in a worker
    process (`parse`), so the parts must pickle (plain strings, bytes and tuples).
    """

    def __init__(self, content: bytes) -> None:
        msg = BytesParser(policy=email.policy.default).parsebytes(content)
        assert isinstance(msg, EmailMessage)
        self.sender = str(msg.get("From", ""))
        self.subject = str(msg.get("Subject", ""))
        self.reply_to = str(msg.get("Reply-To", "")) or None
        self.headers = [(k, str(v)) for k, v in msg.items() if k.lower() not in _OWN_HEADERS]
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        self.text = text.get_content() if text is not None else None
        self.html = html.get_content() if html is not None else None
        self.attachments: list[tuple[str, str, bytes, str | None]] = []
        for part in msg.iter_attachments():
            payload = part.get_payload(decode=True)
            cid = part.get("Content-ID")
            self.attachments.append(
                (
                    part.get_filename() or "attachment",
                    part.get_content_type(),
                    payload if isinstance(payload, bytes) else b"",
                    str(cid).strip("<>") if cid else None,
                )
            )
        if self.text is None and self.html is None:
            raise UpstreamPermanent("the message has no text or HTML part an ESP API can carry")


async def parse(content: bytes) -> Parsed:
    """The parts of `content`, parsed off the event loop when it is large."""
    return await in_process(len(content), Parsed, content)


def _address(header: str) -> dict[str, str]:
    name, address = email.utils.parseaddr(header)
    return {"email": address, "name": name} if name else {"email": address}


class SendgridUpstream(HttpUpstream):
    """SendGrid v3 mail/send."""

    name = "sendgrid"
    passes_through = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.sendgrid.com",
        timeout: timedelta = timedelta(seconds=30),
        pool_size: int = 10,
    ) -> None:
        super().__init__(base_url, timeout=timeout, pool_size=pool_size)
        self._key = api_key

    def body(self, envelope: Envelope, msg: Parsed) -> dict[str, Any]:
        """The mail/send request for one delivery."""
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": envelope.recipient}]}],
            "from": _address(msg.sender) if msg.sender else {"email": envelope.mail_from},
            "subject": msg.subject,
            "content": [
                {"type": kind, "value": value}
                for kind, value in (("text/plain", msg.text), ("text/html", msg.html))
                if value is not None
            ],
            "custom_args": {"sendguard_delivery_id": envelope.delivery_id},
        }
        if msg.reply_to:
            body["reply_to"] = _address(msg.reply_to)
        if msg.headers:
            body["headers"] = dict(msg.headers)
        if msg.attachments:
            body["attachments"] = [
                {
                    "content": base64.b64encode(data).decode(),
                    "filename": name,
                    "type": kind,
                    "disposition": "inline" if cid else "attachment",
                    **({"content_id": cid} if cid else {}),
                }
                for name, kind, data, cid in msg.attachments
            ]
        return body

    async def send(self, envelope: Envelope, content: bytes) -> None:
        body = self.body(envelope, await parse(content))
        await self.request(
            "/v3/mail/send", headers={"Authorization": f"Bearer {self._key}"}, json_body=body
        )

    async def send_request(self, envelope: Envelope, request: EspRequest) -> None:
        """The client's mail/send request, narrowed to this delivery (pass-through)."""
        await self.request(
            "/v3/mail/send",
            headers={"Authorization": f"Bearer {self._key}"},
            json_body=passthrough.sendgrid(request.body, envelope),
        )


class PostmarkUpstream(HttpUpstream):
    """Postmark /email."""

    name = "postmark"
    passes_through = "postmark"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.postmarkapp.com",
        message_stream: str | None = None,
        timeout: timedelta = timedelta(seconds=30),
        pool_size: int = 10,
    ) -> None:
        super().__init__(base_url, timeout=timeout, pool_size=pool_size)
        self._key = api_key
        self._stream = message_stream

    def body(self, envelope: Envelope, msg: Parsed) -> dict[str, Any]:
        """The /email request for one delivery."""
        body: dict[str, Any] = {
            "From": msg.sender or envelope.mail_from,
            "To": envelope.recipient,
            "Subject": msg.subject,
            "Metadata": {"sendguard_delivery_id": envelope.delivery_id},
        }
        if msg.text is not None:
            body["TextBody"] = msg.text
        if msg.html is not None:
            body["HtmlBody"] = msg.html
        if msg.reply_to:
            body["ReplyTo"] = msg.reply_to
        if msg.headers:
            body["Headers"] = [{"Name": k, "Value": v} for k, v in msg.headers]
        if self._stream:
            body["MessageStream"] = self._stream
        if msg.attachments:
            body["Attachments"] = [
                {
                    "Name": name,
                    "Content": base64.b64encode(data).decode(),
                    "ContentType": kind,
                    **({"ContentID": f"cid:{cid}"} if cid else {}),
                }
                for name, kind, data, cid in msg.attachments
            ]
        return body

    async def send(self, envelope: Envelope, content: bytes) -> None:
        await self._post("/email", self.body(envelope, await parse(content)))

    async def send_request(self, envelope: Envelope, request: EspRequest) -> None:
        """The client's email (templated or not), narrowed to this delivery (pass-through)."""
        path, body = passthrough.postmark(request.body, envelope, self._stream)
        await self._post(path, body)

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        answer = await self.request(
            path,
            headers={"X-Postmark-Server-Token": self._key, "Accept": "application/json"},
            json_body=body,
        )
        if isinstance(answer, dict) and answer.get("ErrorCode", 0) != 0:
            raise UpstreamPermanent(f"postmark: [{answer['ErrorCode']}] {answer.get('Message')}")


class MailgunUpstream(HttpUpstream):
    """Mailgun messages.mime: the rendered message leaves byte for byte."""

    name = "mailgun"
    passes_through = "mailgun"

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        base_url: str = "https://api.mailgun.net",
        timeout: timedelta = timedelta(seconds=30),
        pool_size: int = 10,
    ) -> None:
        super().__init__(base_url, timeout=timeout, pool_size=pool_size)
        self._auth = aiohttp.BasicAuth("api", api_key)
        self._domain = domain

    async def send(self, envelope: Envelope, content: bytes) -> None:
        form = aiohttp.FormData()
        form.add_field("to", envelope.recipient)
        form.add_field("v:sendguard_delivery_id", envelope.delivery_id)
        form.add_field("message", content, filename="message.mime", content_type="message/rfc822")
        await self.request(
            f"/v3/{self._domain}/messages.mime", headers={}, data=form, auth=self._auth
        )

    async def send_request(self, envelope: Envelope, request: EspRequest) -> None:
        """The client's messages (or messages.mime) form, narrowed to this delivery
        (pass-through), to this upstream's domain."""
        narrowed = passthrough.mailgun(request.body, envelope)
        form = aiohttp.FormData()
        for name, value in narrowed.fields:
            form.add_field(name, value)
        for item in narrowed.files:
            form.add_field(
                item.name, item.content, filename=item.filename, content_type=item.content_type
            )
        path = "messages.mime" if narrowed.mime else "messages"
        await self.request(f"/v3/{self._domain}/{path}", headers={}, data=form, auth=self._auth)
