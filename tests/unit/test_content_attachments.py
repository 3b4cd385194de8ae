"""The link-target fingerprint covers attachments (parts that are not text): the same file
however it is encoded is the same; other bytes, another name, one added or removed is a
change that a reviewer is told about by name."""

from __future__ import annotations

from email.message import EmailMessage

from sendguard.content import fingerprints
from sendguard.links import attachment, describe_change, what_changed

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(256))


def message(*files: tuple[str, bytes, str], cte: str | None = None) -> bytes:
    """A campaign message with a text part, an HTML part and `files` (name, bytes, type)."""
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "ann@example.net"
    msg["Subject"] = "Spring offer"
    msg.set_content("Our offer is attached. https://shop.example/spring")
    msg.add_alternative(
        '<p>Our offer is attached. <a href="https://shop.example/s">Shop</a></p>', subtype="html"
    )
    for name, data, content_type in files:
        maintype, _, subtype = content_type.partition("/")
        extra = {"cte": cte} if cte else {}
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name, **extra)
    return msg.as_bytes()


def test_a_file_is_a_target_by_name_and_decoded_bytes() -> None:
    links = fingerprints(message(("offer.pdf", PDF, "application/pdf"))).links
    assert " ".join(sorted(links.split())) == links
    assert f"{attachment('offer.pdf', PDF)[0]}:{attachment('offer.pdf', PDF)[1]}" in links.split()
    assert "link:shop.example" in links.split()


def test_the_same_file_re_encoded_is_the_same() -> None:
    base64 = fingerprints(message(("offer.pdf", PDF, "application/pdf")))
    quoted = fingerprints(message(("offer.pdf", PDF, "application/pdf"), cte="quoted-printable"))
    assert b"Content-Transfer-Encoding: quoted-printable" in message(
        ("offer.pdf", PDF, "application/pdf"), cte="quoted-printable"
    )
    assert quoted == base64


def test_other_bytes_are_a_change_named_for_the_reviewer() -> None:
    approved = fingerprints(message(("offer.pdf", PDF, "application/pdf")))
    swapped = fingerprints(message(("offer.pdf", PDF + b"%evil", "application/pdf")))
    assert swapped.text == approved.text  # the words are the same: only the file differs
    assert swapped.links != approved.links
    assert what_changed(approved.links, swapped.links) == "attachments"
    change = describe_change(approved.links, swapped.links)
    assert change.startswith("new attachment offer.pdf (sha256:")
    assert "; removed attachment offer.pdf (sha256:" in change


def test_a_new_name_an_added_and_a_removed_file_are_changes() -> None:
    approved = fingerprints(message(("offer.pdf", PDF, "application/pdf"))).links
    renamed = fingerprints(message(("my offer €.pdf", PDF, "application/pdf"))).links
    assert "new attachment my offer €.pdf (sha256:" in describe_change(approved, renamed)
    html = b'<a href="https://evil.example/login">Pay</a>'
    added = fingerprints(
        message(
            ("offer.pdf", PDF, "application/pdf"), ("offer.html", html, "application/octet-stream")
        )
    ).links
    assert describe_change(approved, added).startswith("new attachment offer.html (sha256:")
    removed = fingerprints(message()).links
    assert describe_change(approved, removed).startswith("removed attachment offer.pdf")
    assert removed == "link:shop.example"


def test_a_nameless_part_is_named_by_its_type_and_a_text_attachment_is_text() -> None:
    msg = EmailMessage()
    msg["Subject"] = "Logo"
    msg.set_content("See the logo.")
    msg.add_attachment(b"\x89PNG\r\n\x1a\nlogo", maintype="image", subtype="png")
    links = fingerprints(msg.as_bytes()).links
    assert links.startswith("attachment:image/png@sha256:")
    # A text/* attachment changes the text fingerprint instead (as before): not a target.
    text = EmailMessage()
    text["Subject"] = "List"
    text.set_content("See the list.")
    text.add_attachment("a,b\n1,2\n", subtype="csv", filename="list.csv")
    assert fingerprints(text.as_bytes()).links == ""


def test_links_and_files_changed_together_are_both_named() -> None:
    approved = fingerprints(message(("offer.pdf", PDF, "application/pdf"))).links
    other = approved.replace("link:shop.example", "link:evil.example")
    other = other.replace("attachment:offer.pdf@sha256:", "attachment:offer.pdf@sha256:0")
    assert what_changed(approved, other) == "links and attachments"
    assert what_changed("link:a.example", "link:b.example") == "links"


def test_a_name_in_rfc_2047_words_is_read_as_one_in_rfc_2231() -> None:
    words = message(("offer.pdf", PDF, "application/pdf")).replace(
        b'filename="offer.pdf"', b'filename="=?utf-8?q?Angebot_f=C3=BCr_Sie.pdf?="'
    )
    assert b"=?utf-8?q?" in words
    rfc2231 = message(("Angebot für Sie.pdf", PDF, "application/pdf"))
    assert b"filename*=" in rfc2231
    assert fingerprints(words).links == fingerprints(rfc2231).links
    assert "attachment:Angebot%20f%C3%BCr%20Sie.pdf@sha256:" in fingerprints(words).links
