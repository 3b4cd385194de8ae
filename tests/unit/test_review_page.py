"""The review page's parts: sign-in throttle and sessions (on a real SQLite store), the safe
preview of a message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from sendguard.config import ReviewNotifyOptions, ReviewUserOptions, parse_config
from sendguard.errors import ConfigError
from sendguard.identity import Identity, Role
from sendguard.password import hash_password
from sendguard.review_page.editing import Editable, changed_parts, editable, rewrite, unified_diff
from sendguard.review_page.guard import Provenance, from_here, safe_next
from sendguard.review_page.notify import public_url, retry_delay
from sendguard.review_page.preview import preview, rewrite_html
from sendguard.review_page.sessions import (
    FAILURE_WINDOW,
    MAX_FAILURES,
    attempt_sign_in,
    find_session,
    signed_in,
    start_session,
    throttle_keys,
)
from sendguard.review_queue import EditedPart
from sendguard.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def test_the_throttle_refuses_after_the_limit_until_the_window_passes(
    store: SQLiteStore,
) -> None:
    keys = throttle_keys("Ana", "10.0.0.1")
    for i in range(MAX_FAILURES):
        assert await attempt_sign_in(store, keys, T0 + timedelta(seconds=i)) is None
    wait = await attempt_sign_in(
        store, throttle_keys("ana", "10.0.0.2"), T0 + timedelta(seconds=10)
    )
    assert wait == FAILURE_WINDOW - timedelta(seconds=10)  # the user name is case-blind
    assert await attempt_sign_in(store, throttle_keys("bob", "10.0.0.1"), T0) is None
    assert await attempt_sign_in(store, keys, T0 + FAILURE_WINDOW) is None
    # A right password forgives its own attempt and clears the user name's failures.
    await signed_in(store, keys, T0 + FAILURE_WINDOW)
    for i in range(MAX_FAILURES):
        later = T0 + FAILURE_WINDOW + timedelta(seconds=i + 1)
        assert await attempt_sign_in(store, keys, later) is None


async def test_sessions_expire_end_and_follow_the_configured_user(store: SQLiteStore) -> None:
    hashed = hash_password("ana-password")
    users = {"ana": ReviewUserOptions(password_hash=hashed, role="reviewer")}
    who = Identity("ana", Role.REVIEWER)
    session = await start_session(store, who, hashed, timedelta(hours=1), T0)
    assert await find_session(store, session.id, users, T0 + timedelta(minutes=59)) == session
    assert session.csrf_matches(session.csrf) and not session.csrf_matches("x")
    assert await find_session(store, session.id, users, T0 + timedelta(hours=1)) is None
    other = await start_session(store, who, hashed, timedelta(hours=1), T0)
    await store.end_session(other.key)
    assert await find_session(store, other.id, users, T0) is None
    assert await find_session(store, other.key, users, T0) is None  # the hash opens nothing

    # The role is the one configured now; a new password (or no such user) ends the session.
    third = await start_session(store, who, hashed, timedelta(hours=1), T0)
    viewer = {"ana": ReviewUserOptions(password_hash=hashed, role="viewer")}
    found = await find_session(store, third.id, viewer, T0)
    assert found is not None and found.identity == Identity("ana", Role.VIEWER)
    changed = {"ana": ReviewUserOptions(password_hash=hash_password("new"), role="reviewer")}
    assert await find_session(store, third.id, changed, T0) is None
    assert await find_session(store, third.id, users, T0) is None  # ended, not only refused
    fourth = await start_session(store, who, hashed, timedelta(hours=1), T0)
    assert await find_session(store, fourth.id, {}, T0) is None
    assert await find_session(store, fourth.id, users, T0) is None


async def test_a_notice_is_shown_once_to_its_own_session_only(store: SQLiteStore) -> None:
    hashed = hash_password("pw")
    users = {name: ReviewUserOptions(password_hash=hashed) for name in ("ana", "ben")}
    life = timedelta(hours=1)
    ana = await start_session(store, Identity("ana", Role.REVIEWER), hashed, life, T0)
    ben = await start_session(store, Identity("ben", Role.REVIEWER), hashed, life, T0)

    async def shown(token: str) -> str:
        found = await find_session(store, token, users, T0, take_notice=True)
        return found.notice if found is not None else ""

    await store.leave_notice(ana.key, "Campaign spring-sale approved: 2 deliveries.")
    assert await shown(ben.id) == ""
    peek = await find_session(store, ana.id, users, T0)  # a form's check does not take it
    assert peek is not None and peek.notice == ""
    assert await shown(ana.id) == "Campaign spring-sale approved: 2 deliveries."
    assert await shown(ana.id) == ""  # a reload does not show it again
    await store.leave_notice(ana.key, "first")
    await store.leave_notice(ana.key, "second")
    assert await shown(ana.id) == "second"
    await store.leave_notice(ben.key, "left behind")
    await store.end_session(ben.key)
    assert await shown(ben.id) == ""


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


def _alternative(subject: str, text: str, html: str) -> bytes:
    message = EmailMessage()
    message["From"] = "news@shop.example"
    message["To"] = "ann@example.org"
    message["Subject"] = subject
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    return message.as_bytes()


def test_an_edit_replaces_only_the_changed_parts_and_keeps_the_rest() -> None:
    original = _alternative("Sprng sale", "Dear Ann,\nall 30% off.\n", "<p>Dear Ann</p>")
    before = editable(original)
    assert before == Editable("Sprng sale", "Dear Ann,\nall 30% off.\n", "<p>Dear Ann</p>\n")
    after = Editable("Spring sale ☀", "Dear Ann,\r\nall 30% off.\r\n", "<p>Dear Ann ✓ 30%</p>")
    parts = changed_parts(before, after)
    assert parts == (EditedPart.SUBJECT, EditedPart.HTML)  # CRLF from a form is no change
    edited = rewrite(original, after, parts)
    assert editable(edited) == Editable(
        "Spring sale ☀", "Dear Ann,\nall 30% off.\n", "<p>Dear Ann ✓ 30%</p>\n"
    )
    assert edited.isascii()  # encoded words and quoted-printable: still 7-bit
    assert b'filename="a.pdf"' in edited and b"From: news@shop.example" in edited
    diff = unified_diff(before, after, parts)
    assert "-Sprng sale\n+Spring sale ☀" in diff and "+<p>Dear Ann ✓ 30%</p>" in diff
    assert "subject (original)" in diff and "text (original)" not in diff


def test_an_edit_of_nothing_changes_no_part() -> None:
    original = _alternative("Hi", "Body\n", "<p>Body</p>")
    assert changed_parts(editable(original), editable(original)) == ()
    # A part the message does not have cannot be added by an edit.
    plain = EmailMessage()
    plain["Subject"] = "Hi"
    plain.set_content("Body\n")
    before = editable(plain.as_bytes())
    assert before.html is None
    assert changed_parts(before, Editable("Hi", "Body\n", "<p>new</p>")) == ()


def test_notify_config_reads_the_webhook_secret_and_names_bad_keys() -> None:
    text = (
        "review:\n  public_url: https://sg.example\n"
        "  notify: {webhook_url: 'env:HOOK', email_to: [rev@shop.example], digest_every: null}\n"
    )
    settings = parse_config(text, "t", {"HOOK": "https://hooks.example/T1"})
    notify = settings.config.review.notify
    assert notify.webhook_url == "https://hooks.example/T1" and notify.digest_every is None
    assert notify.enabled and public_url(settings.config.review.public_url, "x:1") == (
        "https://sg.example"
    )
    assert public_url(None, "127.0.0.1:8025") == "http://127.0.0.1:8025"
    with pytest.raises(ConfigError) as caught:
        parse_config("review:\n  notify: {webhook_url: 'env:HOOK'}\n", "t", {})
    assert "environment variable HOOK is not set" in str(caught.value)
    assert "review.notify.webhook_url" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config("review:\n  notify: {every: 1s, check_every: 0s}\n", "t", {})
    fields = {p.path: p.message for p in caught.value.problems}
    assert "allowed: check_every" in fields["review.notify.every"]
    assert "between 1s and 1h" in fields["review.notify.check_every"]


def test_notification_retries_double_up_to_the_cap() -> None:
    notify = ReviewNotifyOptions(retry_min=timedelta(seconds=10), retry_max=timedelta(minutes=1))
    waits = [retry_delay(notify, n).total_seconds() for n in range(1, 6)]
    assert waits == [10, 20, 40, 60, 60]
    assert not ReviewNotifyOptions().enabled


HERE = "https://review.example:8443"
# (Origin, Referer, Sec-Fetch-Site) -> where the request comes from. None: header absent.
ORIGIN_TABLE = [
    # A browser's Fetch Metadata decides first; no page can set it.
    ("null", None, "same-origin", Provenance.HERE),  # the page's own form under no-referrer
    (None, None, "same-origin", Provenance.HERE),
    (HERE, f"{HERE}/review", "same-origin", Provenance.HERE),
    ("null", None, "same-site", Provenance.ELSEWHERE),  # another port, no-referrer
    ("null", None, "cross-site", Provenance.ELSEWHERE),  # a sandboxed or data: page
    ("null", None, "none", Provenance.ELSEWHERE),  # typed, bookmarked
    (HERE, None, "cross-site", Provenance.ELSEWHERE),  # contradicts itself: refused
    (None, f"{HERE}/review", "none", Provenance.ELSEWHERE),
    # A real Origin is never overruled.
    ("https://evil.example", None, "same-origin", Provenance.ELSEWHERE),
    ("http://review.example:8443", None, None, Provenance.ELSEWHERE),  # other scheme
    ("https://review.example", None, None, Provenance.ELSEWHERE),  # other port
    (HERE, None, None, Provenance.HERE),  # a script, or a browser without Fetch Metadata
    (HERE, "https://evil.example/", None, Provenance.HERE),  # Origin rules over Referer
    # No Origin at all (older browsers): the Referer tells.
    (None, f"{HERE}/review", None, Provenance.HERE),
    (None, HERE, None, Provenance.HERE),
    (None, f"{HERE}.evil.example/review", None, Provenance.ELSEWHERE),
    (None, "https://evil.example/review", None, Provenance.ELSEWHERE),
    # Hidden and unproven: a plain-HTTP browser's own form looks exactly like another site's.
    ("null", None, None, Provenance.UNSAID),
    ("null", f"{HERE}/review", None, Provenance.UNSAID),  # a sandboxed frame of this origin
    (None, None, None, Provenance.UNSAID),
    (
        "null",
        "https://evil.example/",
        "same-origin",
        Provenance.HERE,
    ),  # Referer ignored beside null
]


@pytest.mark.parametrize(("origin", "referer", "fetch_site", "expected"), ORIGIN_TABLE)
def test_where_a_state_change_comes_from(
    origin: str | None, referer: str | None, fetch_site: str | None, expected: Provenance
) -> None:
    assert from_here(HERE, origin, referer, fetch_site) is expected
