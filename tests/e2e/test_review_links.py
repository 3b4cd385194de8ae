"""An approval covers the message's links, not only its text: the same copy pointing somewhere
else (a link to another domain, an image from a new host, a link gone) is held again with a
reason naming the hosts; per-recipient paths and tokens, case and the IDNA form of a host are
not a change; approving the changed copy lets it flow. Over SMTP and HTTP, on both stores."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from tests.e2e.test_review_bound import reason
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

TEXT_LINK = '<a href="https://shop.example/spring?upn={token}">Shop the spring sale</a>'
IMAGE = '<img src="https://cdn.example/{token}/hero.png" alt="">'
BOOKS = '<a href="https://{books}/neu">Neue Bücher</a>'


def page(link: str = TEXT_LINK, image: str = IMAGE, books: str = "xn--bcher-kva.example") -> str:
    return (
        "<html><body><p>Spring is here.</p>"
        f"<p>{link.format(token='t')}</p><p>{image.format(token='t')}</p>"
        f"<p>{BOOKS.format(books=books)}</p></body></html>"
    )


def html_content(recipient: str, html: str) -> bytes:
    """An HTML message of campaign `spring`, 8bit."""
    return (
        "From: shop@example.com\r\n"
        f"To: {recipient}\r\n"
        "Subject: Spring sale\r\n"
        "X-Campaign: spring\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{html}\r\n"
    ).encode()


def smtp_html(proc: SendguardProcess, recipient: str, html: str) -> str:
    """Send `html_content` over SMTP; return its queue id."""
    content = html_content(recipient, html)
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        code, reply = client.rcpt(recipient)
        assert code == 250, reply
        code, reply = client.data(content)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def http_html(proc: SendguardProcess, recipient: str, html: str) -> str:
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": [recipient],
            "subject": "Spring sale",
            "html": html,
            "campaign": "spring",
        },
    )
    assert status == 202, answer
    message_id: str = answer["id"]
    return message_id


def approve_campaign(proc: SendguardProcess) -> None:
    status, answer = proc.call("POST", "/v1/campaigns/spring/approve", {"note": "checked"})
    assert status == 200, answer


def approved_base(proc: SendguardProcess, send: Callable[[str, str], str]) -> None:
    """The campaign approved with the base page's content: links to shop.example and
    xn--bcher-kva.example, an image from cdn.example."""
    first = send("first@example.org", page())
    proc.wait_states({"first@example.org": "held"}, first)
    approve_campaign(proc)
    proc.wait_states({"first@example.org": "sent"}, first)


def check_links_are_bound(
    proc: SendguardProcess, sink: Sink, send: Callable[[str, str], str]
) -> None:
    approved_base(proc, send)

    # (d) the same hosts, other per-recipient paths and tokens: flows
    tokens = page(
        link='<a href="https://shop.example/spring/{token}?upn=bob-4711&amp;e=bob">Shop the'
        " spring sale</a>",
        image='<img src="https://cdn.example/u/bob-4711/hero.png?w=600" alt="">',
    )
    flows = send("bob@example.org", tokens)
    # (e) a mixed-case host and the Unicode form of a punycode host: the same hosts
    spelt = page(
        link='<a href="https://SHOP.Example/spring">Shop the spring sale</a>',
        books="Bücher.EXAMPLE",
    )
    spelt_id = send("eve@example.org", spelt)
    proc.wait_states({"bob@example.org": "sent"}, flows)
    proc.wait_states({"eve@example.org": "sent"}, spelt_id)

    # (a) the link goes to another domain
    swapped = send(
        "a@example.org",
        page(link='<a href="https://shop-example.evil.example/spring">Shop the spring sale</a>'),
    )
    # (b) an image from a new host added
    added = send(
        "b@example.org",
        page(image=IMAGE + '<img src="https://pixel.tracker.example/o.gif" alt="">'),
    )
    # (c) a link removed (the image, here)
    removed = send("c@example.org", page(image=""))
    proc.wait_states({"a@example.org": "held"}, swapped)
    proc.wait_states({"b@example.org": "held"}, added)
    proc.wait_states({"c@example.org": "held"}, removed)
    why = reason(proc, "a@example.org")
    assert "campaign spring: links changed since token-1 approved this content on" in why, why
    assert why.endswith(
        "new link host shop-example.evil.example; removed link host shop.example"
    ), why
    assert reason(proc, "b@example.org").endswith("new embed host pixel.tracker.example")
    assert reason(proc, "c@example.org").endswith("removed embed host cdn.example")
    received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == ["bob@example.org", "eve@example.org", "first@example.org"]

    # (f) approving the changed copy (one delivery) records it: later sends of it flow
    (held,) = proc.deliveries(swapped)
    status, answer = proc.call("POST", f"/v1/deliveries/{held['id']}/approve", {})
    assert status == 200, answer
    proc.wait_states({"a@example.org": "sent"}, swapped)
    again = send(
        "a2@example.org",
        page(link='<a href="https://shop-example.evil.example/spring">Shop the spring sale</a>'),
    )
    proc.wait_states({"a2@example.org": "sent"}, again)
    # ... and approving the campaign records what it releases
    approve_campaign(proc)
    proc.wait_states({"b@example.org": "sent", "c@example.org": "sent"})
    later = send("c2@example.org", page(image=""))
    proc.wait_states({"c2@example.org": "sent"}, later)
    # the first approval still covers the first copy
    base = send("d@example.org", page())
    proc.wait_states({"d@example.org": "sent"}, base)


def test_smtp_an_approval_covers_the_links_it_saw(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    check_links_are_bound(proc, sink, lambda rcpt, html: smtp_html(proc, rcpt, html))


def test_http_an_approval_covers_the_links_it_saw(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])
    check_links_are_bound(proc, sink, lambda rcpt, html: http_html(proc, rcpt, html))
