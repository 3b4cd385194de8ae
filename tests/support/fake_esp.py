"""A local fake of the SendGrid, Postmark and Mailgun send APIs: checks the shape and auth of
what sendguard's upstreams send, records it, and answers as scripted (202/200, 429 with
Retry-After, 500, 400)."""

from __future__ import annotations

import asyncio
import email
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

KEY = "esp-upstream-key"


@dataclass
class Call:
    esp: str
    recipient: str
    body: Any
    at: float = field(default_factory=time.monotonic)
    path: str = ""


class FakeEsp:
    """Serves /v3/mail/send, /email(/withTemplate) and /v3/{domain}/messages(.mime) on a
    loopback port."""

    def __init__(self, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self._ssl = ssl_context
        """With a context, it serves HTTPS."""
        self.calls: list[Call] = []
        self.problems: list[str] = []
        self._script: list[tuple[int, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def script(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        """The next answers, in order; then success."""
        with self._lock:
            self._script.extend(answers)

    def _next(self, ok: tuple[int, dict[str, str], Any]) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            return self._script.pop(0) if self._script else ok

    def _answer(self, answer: tuple[int, dict[str, str], Any]) -> web.Response:
        status, headers, body = answer
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async def _sendgrid(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            self.problems.append("sendgrid: bad Authorization")
        # A dynamic template brings its own subject and content.
        required = (
            "personalizations",
            "from",
            *(() if body.get("template_id") else ("subject", "content")),
        )
        for key in required:
            if key not in body:
                self.problems.append(f"sendgrid: {key} missing")
        recipient = body["personalizations"][0]["to"][0]["email"]
        self.calls.append(Call("sendgrid", recipient, body, path=request.path))
        return self._answer(self._next((202, {"X-Message-Id": "sg-1"}, None)))

    async def _postmark(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.headers.get("X-Postmark-Server-Token") != KEY:
            self.problems.append("postmark: bad token")
        templated = request.path == "/email/withTemplate"
        for key in ("From", "To") if templated else ("From", "To", "Subject"):
            if key not in body:
                self.problems.append(f"postmark: {key} missing")
        if templated and "TemplateId" not in body and "TemplateAlias" not in body:
            self.problems.append("postmark: withTemplate without TemplateId or TemplateAlias")
        if not templated and "TextBody" not in body and "HtmlBody" not in body:
            self.problems.append("postmark: no body")
        self.calls.append(Call("postmark", body["To"], body, path=request.path))
        ok = {
            "To": body["To"],
            "SubmittedAt": "now",
            "MessageID": "pm-1",
            "ErrorCode": 0,
            "Message": "OK",
        }
        return self._answer(self._next((200, {}, ok)))

    async def _mailgun(self, request: web.Request) -> web.Response:
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        if (auth.login, auth.password) != ("api", KEY):
            self.problems.append("mailgun: bad basic auth")
        form = await request.post()
        message = form.get("message")
        content = message.file.read() if isinstance(message, web.FileField) else b""
        if not email.message_from_bytes(content).get("From"):
            self.problems.append("mailgun: message has no From")
        self.calls.append(Call("mailgun", str(form.get("to")), content))
        ok = {"id": "<mg-1@mg.example>", "message": "Queued. Thank you."}
        return self._answer(self._next((200, {}, ok)))

    async def _mailgun_form(self, request: web.Request) -> web.Response:
        """messages (not .mime): the form as sent, fields in order and files by name."""
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        if (auth.login, auth.password) != ("api", KEY):
            self.problems.append("mailgun: bad basic auth")
        form = await request.post()
        fields: list[tuple[str, str]] = []
        files: dict[str, bytes] = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[value.filename] = value.file.read()
            else:
                fields.append((name, str(value)))
        if not any(k == "from" for k, _ in fields):
            self.problems.append("mailgun: from missing")
        body = {"fields": fields, "files": files}
        self.calls.append(Call("mailgun", str(form.get("to")), body, path=request.path))
        ok = {"id": "<mg-1@mg.example>", "message": "Queued. Thank you."}
        return self._answer(self._next((200, {}, ok)))

    async def _root(self, request: web.Request) -> web.Response:
        return self._answer((200, {}, {"ok": True}))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v3/mail/send", self._sendgrid)
        app.router.add_post("/email", self._postmark)
        app.router.add_post("/email/withTemplate", self._postmark)
        app.router.add_post("/v3/{domain}/messages.mime", self._mailgun)
        app.router.add_post("/v3/{domain}/messages", self._mailgun_form)
        app.router.add_get("/", self._root)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def cleanup() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.calls) >= count:
                return list(self.calls)
            time.sleep(0.05)
        raise AssertionError(f"the fake ESP got {len(self.calls)} calls, expected {count}")


def as_json(body: Any) -> str:
    return json.dumps(body)


def upstream_config(fake: FakeEsp, esp: str) -> dict[str, Any]:
    """An upstream of kind `esp` (sendgrid, postmark, mailgun) that sends to `fake`."""
    upstream: dict[str, Any] = {
        "kind": esp,
        "api_key": KEY,
        "base_url": f"http://127.0.0.1:{fake.port}",
    }
    if esp == "mailgun":
        upstream["domain"] = "mg.example"
    return upstream
