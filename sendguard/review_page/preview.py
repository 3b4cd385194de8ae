"""A held message as its recipient would see it, made safe to show a reviewer.

The HTML part is served on its own (in a sandboxed iframe without scripts, under a policy that
forbids scripts and every remote load); remote images are also replaced by a placeholder naming
their URL, so the reviewer sees what would be fetched without anything being fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import escape
from html.parser import HTMLParser

_URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)
_REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


@dataclass(frozen=True)
class Attachment:
    """An attachment by name and size."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Link:
    """A link the message contains: what it shows and where it really goes."""

    text: str
    target: str


@dataclass(frozen=True)
class Preview:
    """What a reviewer sees of a message."""

    from_: str
    to: str
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    links: tuple[Link, ...]
    remote_images: tuple[str, ...]


class _Rewriter(HTMLParser):
    """Re-emits HTML with every remote image replaced by a placeholder, collecting links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[Link] = []
        self.images: list[str] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs, closed=True)

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        values = dict(attrs)
        if tag == "img" and _REMOTE.match(values.get("src") or ""):
            src = values.get("src") or ""
            self.images.append(src)
            alt = values.get("alt") or ""
            label = f"remote image not loaded: {src}" + (f" ({alt})" if alt else "")
            self.out.append(f'<span class="sg-remote-image">[{escape(label)}]</span>')
            return
        if tag == "a" and values.get("href"):
            self._href = values["href"]
            self._text = []
        rendered = "".join(
            f" {name}" if value is None else f' {name}="{escape(value)}"' for name, value in attrs
        )
        self.out.append(f"<{tag}{rendered}{' /' if closed else ''}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append(Link(" ".join("".join(self._text).split()), self._href))
            self._href = None
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.cdata_elem is not None:  # <style>/<script> text is not markup: keep it as is
            self.out.append(data)
            return
        if self._href is not None:
            self._text.append(data)
        self.out.append(escape(data, quote=False))

    def handle_comment(self, data: str) -> None:
        pass  # conditional comments of mail clients load nothing here; drop them

    def handle_decl(self, decl: str) -> None:
        self.out.append(f"<!{decl}>")


def rewrite_html(html: str) -> tuple[str, tuple[Link, ...], tuple[str, ...]]:
    """The HTML with remote images replaced, the links it contains, the remote image URLs."""
    parser = _Rewriter()
    parser.feed(html)
    parser.close()
    return "".join(parser.out), tuple(parser.links), tuple(parser.images)


def _body(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def preview(raw: bytes) -> Preview:
    """Parse a stored message into what a reviewer is shown."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)  # policy.default builds EmailMessage
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if part.get_content_disposition() == "attachment" or part.get_filename():
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            attachments.append(Attachment(part.get_filename() or "(unnamed)", kind, size))
        elif kind == "text/plain" and text is None:
            text = _body(part)
        elif kind == "text/html" and html is None:
            html = _body(part)
    links: list[Link] = []
    images: tuple[str, ...] = ()
    if html is not None:
        html, found, images = rewrite_html(html)
        links.extend(found)
    known = {link.target for link in links}
    for url in _URL.findall(text or ""):
        if url not in known:
            known.add(url)
            links.append(Link(url, url))
    return Preview(
        from_=str(message.get("From", "")),
        to=str(message.get("To", "")),
        subject=str(message.get("Subject", "")),
        text=text,
        html=html,
        attachments=tuple(attachments),
        links=tuple(links),
        remote_images=images,
    )
