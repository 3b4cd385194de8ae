"""The content fingerprint is blind to how a text was encoded: subject as RFC 2047 words or raw
UTF-8, body as quoted-printable, base64 or 8bit in any charset, HTML entities or characters,
composed or decomposed accents; and a plain ASCII message keeps the fingerprint it had."""

from __future__ import annotations

import base64
import email.header
import html
import html.entities
import quopri
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from sendguard.content import content_hash

# Printable text of any script; no control characters (a header cannot hold them) and no
# `=?`, which would make a raw subject read as an encoded word.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60
).filter(lambda t: "=?" not in t and t.strip())


def mime(
    subject: bytes, body: bytes, cte: str, subtype: str = "plain", charset: str = "utf-8"
) -> bytes:
    return (
        b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: "
        + subject
        + b"\r\nMIME-Version: 1.0\r\n"
        + f"Content-Type: text/{subtype}; charset={charset}\r\n".encode()
        + f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + body
    )


def encoded_word(subject: str) -> bytes:
    return email.header.Header(subject, "utf-8").encode().encode()


def body_as(text: str, cte: str, charset: str = "utf-8") -> bytes:
    data = text.encode(charset).replace(b"\n", b"\r\n")
    if cte == "base64":
        return base64.encodebytes(data)
    if cte == "quoted-printable":
        return quopri.encodestring(data)
    return data


def entities(text: str, named: bool) -> str:
    """`text` as HTML with every non-ASCII character an entity (named where HTML has a name)."""
    out = []
    for char in html.escape(text, quote=False):
        name = html.entities.codepoint2name.get(ord(char)) if named else None
        if ord(char) < 128:
            out.append(char)
        else:
            out.append(f"&{name};" if name else f"&#{ord(char)};")
    return "".join(out)


@given(subject=TEXT, body=TEXT)
def test_subject_encoded_words_and_raw_utf8_fingerprint_alike(subject: str, body: str) -> None:
    raw_body = body_as(body, "8bit")
    encoded = mime(encoded_word(subject), raw_body, "8bit")
    raw = mime(subject.encode(), raw_body, "8bit")
    assert content_hash(encoded) == content_hash(raw)


@given(subject=TEXT, body=TEXT)
def test_quoted_printable_base64_and_8bit_bodies_fingerprint_alike(subject: str, body: str) -> None:
    hashes = {
        content_hash(mime(encoded_word(subject), body_as(body, cte), cte))
        for cte in ("8bit", "quoted-printable", "base64")
    }
    assert len(hashes) == 1


@given(body=TEXT)
def test_html_entities_and_characters_fingerprint_alike(body: str) -> None:
    as_html = "<html><body><p>" + html.escape(body, quote=False) + "</p></body></html>"
    forms = [
        as_html,
        "<html><body><p>" + entities(body, named=True) + "</p></body></html>",
        "<html><body><p>" + entities(body, named=False) + "</p></body></html>",
    ]
    hashes = {
        content_hash(mime(b"Offer", body_as(f, "quoted-printable"), "quoted-printable", "html"))
        for f in forms
    }
    assert len(hashes) == 1


def test_named_entities_eacute_and_the_character() -> None:
    a = mime(
        b"=?utf-8?q?Caf=C3=A9?=", b"<p>Caf&eacute; cr&egrave;me &amp; more</p>", "7bit", "html"
    )
    b = mime("Café".encode(), "<p>Café crème &amp; more</p>".encode(), "8bit", "html")
    assert content_hash(a) == content_hash(b)


def test_a_charset_other_than_utf8_reads_the_same_text() -> None:
    text = "Grüße aus Köln, Straße"
    latin = mime(
        b"=?iso-8859-1?q?Gr=FC=DFe?=",
        body_as(text, "quoted-printable", "iso-8859-1"),
        "quoted-printable",
        charset="iso-8859-1",
    )
    utf8 = mime("Grüße".encode(), body_as(text, "base64"), "base64")
    assert content_hash(latin) == content_hash(utf8)


@given(subject=TEXT, body=TEXT)
def test_composed_and_decomposed_accents_fingerprint_alike(subject: str, body: str) -> None:
    def form(kind: str) -> bytes:
        s, b = unicodedata.normalize(kind, subject), unicodedata.normalize(kind, body)  # type: ignore[arg-type]
        return mime(s.encode(), body_as(b, "8bit"), "8bit")

    assert content_hash(form("NFC")) == content_hash(form("NFD"))


def test_different_text_still_differs() -> None:
    a = mime(encoded_word("Café offer"), body_as("Boots 40% off", "base64"), "base64")
    b = mime(encoded_word("Café offer"), body_as("Boots 50% off", "base64"), "base64")
    c = mime(encoded_word("Cafe offer"), body_as("Boots 40% off", "base64"), "base64")
    assert len({content_hash(a), content_hash(b), content_hash(c)}) == 3


def test_a_plain_ascii_message_keeps_its_earlier_fingerprint() -> None:
    """Stored fingerprints (repetition history, campaign approvals) of plain ASCII messages
    without entities still match: this value was computed before encodings were unified."""
    raw = (
        b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: Spring sale:\r\n  40% off"
        b" boots\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"Hello Ann,\r\nAll boots are 40% off until Sunday:"
        b" https://shop.example/boots?utm_source=mail&size=42\r\n"
    )
    assert content_hash(raw) == "de62f1874cac3b850a10f9ec878e3403"
