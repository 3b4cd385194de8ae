"""A link is counted however it is spelt, as a browser or mail client reads it: an approved
campaign's copy with a link or an image added in a spelling that browsers follow (three
slashes or none after `https:`, backslashes, a tab or a control character in the URL, CSS
`url(&quot;...&quot;)` as editors serialise a style attribute, `uRl(`), or a redirect link of
an approved host carrying a URL to another (`https://shop.example/r?u=https%3A%2F%2Fevil...`),
is held again, naming the new host; harmless spellings of the approved hosts still flow
(session-11 trial: each of these flowed as approved; headless Chromium followed each spelling
to the new host)."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from tests.e2e.test_review_bound import reason
from tests.e2e.test_review_links import IMAGE, TEXT_LINK, approved_base, page, smtp_html
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]

WIN = '<img src="https://cdn.example/t/win.png" alt="">'
# Added beside the approved copy's links (which all stay), around an image from the approved CDN
# or on an empty cell, so the text is the approved one: recipient -> (markup, the reason's end)
ADDED = {
    "three-slashes@example.org": (
        '<a href="https:///evil.example/win">{WIN}</a>',
        "new link host evil.example",
    ),
    "no-slash@example.org": (
        '<a href="HTTPS:bare.evil.example/win">{WIN}</a>',
        "new link host bare.evil.example",
    ),
    "backslashes@example.org": (
        '<a href="https:\\\\\\back.evil.example/win">{WIN}</a>',
        "new link host back.evil.example",
    ),
    "tab@example.org": (
        '<a href="ht&#9;tps://tab.evil.example/win">{WIN}</a>',
        "new link host tab.evil.example",
    ),
    "control@example.org": (
        '<a href="&#1;https://ctrl.evil.example/win">{WIN}</a>',
        "new link host ctrl.evil.example",
    ),
    "redirect@example.org": (  # the approved host as a redirector to another
        '<a href="https://shop.example/r?u=https%3A%2F%2Fredirect.evil.example%2Fwin&amp;t=1">'
        "{WIN}</a>",
        "new link host redirect.evil.example",
    ),
    "quoted-css@example.org": (
        '<td style="background-image:url(&quot;https://img.evil.example/a.png&quot;)"></td>',
        "new embed host img.evil.example",
    ),
    "css-case@example.org": (
        '<div style="background:uRl(https://css.evil.example/b.png)"></div>',
        "new embed host css.evil.example",
    ),
}


def test_a_link_added_in_any_spelling_a_browser_follows_is_held(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])

    def send(rcpt: str, html: str) -> str:
        return smtp_html(proc, rcpt, html)

    approved_base(proc, send)
    ids = {
        rcpt: send(rcpt, page(link=TEXT_LINK + added.replace("{WIN}", WIN)))
        for rcpt, (added, _) in ADDED.items()
    }
    # The approved hosts spelt otherwise: a tab inside the URL, a trailing dot, a port, the
    # scheme in capitals, a redirect to an approved host, a quoted CSS url() of the approved CDN.
    harmless = page(
        link='<a href="HTTPS://shop.example.:443/spr&#9;ing?upn=z">Shop the spring sale</a>'
        '<a href="https://shop.example/r?u=https%3A%2F%2Fshop.example%2Fs%3Ft%3Dz9">{WIN}</a>'.replace(
            "{WIN}", WIN
        ),
        image=IMAGE + '<td style="background:URL(&quot;https://cdn.example/bg.png&quot;)">',
    )
    flows = send("harmless@example.org", harmless)
    proc.wait_states({"harmless@example.org": "sent"}, flows)
    for rcpt, message_id in ids.items():
        proc.wait_states({rcpt: "held"}, message_id)
        why = reason(proc, rcpt)
        assert "campaign spring: links changed since" in why, (rcpt, why)
        assert why.endswith(ADDED[rcpt][1]), (rcpt, why)
    received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == ["first@example.org", "harmless@example.org"]


def amp_message(recipient: str, amp_link: str) -> bytes:
    """A campaign `amp` message: text, AMP for Email and HTML parts, the AMP part's link given."""
    amp = f'<!doctype html><html amp4email><body><a href="{amp_link}">Shop</a></body></html>'
    return (
        f"From: shop@example.com\r\nTo: {recipient}\r\nSubject: AMP sale\r\nX-Campaign: amp\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nShop\r\n"
        f"--b\r\nContent-Type: text/x-amp-html; charset=utf-8\r\n\r\n{amp}\r\n"
        '--b\r\nContent-Type: text/html\r\n\r\n<a href="https://shop.example/">Shop</a>\r\n'
        "--b--\r\n"
    ).encode()


def test_a_link_in_an_amp_part_is_bound_like_the_html_ones(sendguard: Start, sink: Sink) -> None:
    # AMP for Email (text/x-amp-html) is shown in place of the HTML by Gmail and others; its
    # links were found only as bare URLs in its text, so one written with an entity was none.
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    first = smtp_send(
        proc, "first@example.org", amp_message("first@example.org", "https://shop.example/a")
    )
    proc.wait_states({"first@example.org": "held"}, first)
    status, answer = proc.call("POST", "/v1/campaigns/amp/approve", {"note": "checked"})
    assert status == 200, answer
    proc.wait_states({"first@example.org": "sent"}, first)
    swapped = smtp_send(
        proc, "a@example.org", amp_message("a@example.org", "&#104;ttps://amp.evil.example/a")
    )
    same = smtp_send(proc, "b@example.org", amp_message("b@example.org", "https://SHOP.example/b"))
    proc.wait_states({"b@example.org": "sent"}, same)
    proc.wait_states({"a@example.org": "held"}, swapped)
    assert reason(proc, "a@example.org").endswith("new link host amp.evil.example")


def smtp_send(proc: SendguardProcess, recipient: str, content: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        code, reply = client.rcpt(recipient)
        assert code == 250, reply
        code, reply = client.data(content)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]
