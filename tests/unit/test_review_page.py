"""The review page's pure parts: sign-in throttle, sessions, the safe preview of a message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sendguard.identity import Identity, Role
from sendguard.review_page.guard import safe_next
from sendguard.review_page.preview import preview, rewrite_html
from sendguard.review_page.sessions import (
    FAILURE_WINDOW,
    MAX_FAILURES,
    LoginThrottle,
    Sessions,
    throttle_keys,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_the_throttle_refuses_after_the_limit_until_the_window_passes() -> None:
    throttle = LoginThrottle()
    keys = throttle_keys("Ana", "10.0.0.1")
    for i in range(MAX_FAILURES):
        assert throttle.retry_after(keys, T0 + timedelta(seconds=i)) is None
        throttle.failed(keys, T0 + timedelta(seconds=i))
    wait = throttle.retry_after(throttle_keys("ana", "10.0.0.2"), T0 + timedelta(seconds=10))
    assert wait == FAILURE_WINDOW - timedelta(seconds=10)  # the user name is case-blind
    assert throttle.retry_after(throttle_keys("bob", "10.0.0.1"), T0) is None
    assert throttle.retry_after(keys, T0 + FAILURE_WINDOW) is None


def test_sessions_expire_and_end() -> None:
    sessions = Sessions(timedelta(hours=1))
    who = Identity("ana", Role.REVIEWER)
    session = sessions.start(who, T0)
    assert sessions.get(session.id, T0 + timedelta(minutes=59)) == session
    assert session.csrf_matches(session.csrf) and not session.csrf_matches("x")
    assert sessions.get(session.id, T0 + timedelta(hours=1)) is None
    other = sessions.start(who, T0)
    sessions.end(other.id)
    assert sessions.get(other.id, T0) is None


def test_remote_images_become_placeholders_and_links_show_their_targets() -> None:
    html, links, images = rewrite_html(
        '<style>a > b { color: red }</style><img src="https://t.example/p.gif" alt="hi">'
        '<img src="data:image/png;base64,AA=="><a href="https://evil.example/x">shop.example</a>'
    )
    assert images == ("https://t.example/p.gif",)
    assert "data:image/png" in html and 'src="https://t.example' not in html
    assert "remote image not loaded: https://t.example/p.gif (hi)" in html
    assert "a > b" in html  # style text stays CSS
    assert [(link.text, link.target) for link in links] == [
        ("shop.example", "https://evil.example/x")
    ]


def test_preview_lists_parts_and_attachments() -> None:
    message = EmailMessage()
    message["From"] = "news@shop.example"
    message["To"] = "ann@example.org"
    message["Subject"] = "Sale"
    message.set_content("See https://shop.example/sale")
    message.add_alternative("<p><a href='https://shop.example/a'>A</a></p>", subtype="html")
    message.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="x.pdf")
    shown = preview(message.as_bytes())
    assert (shown.from_, shown.to) == ("news@shop.example", "ann@example.org")
    assert shown.subject == "Sale"
    assert shown.text is not None and "shop.example/sale" in shown.text
    assert [(a.filename, a.size) for a in shown.attachments] == [("x.pdf", 12)]
    assert [link.target for link in shown.links] == [
        "https://shop.example/a",
        "https://shop.example/sale",
    ]


def test_only_paths_of_the_page_are_followed_after_a_form() -> None:
    assert safe_next("/review?page=2") == "/review?page=2"
    assert safe_next("https://evil.example/review") == "/review"
    assert safe_next("/review//evil.example") == "/review"
    assert safe_next(None) == "/review"
