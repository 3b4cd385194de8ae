"""Every construct that sends a reader somewhere or loads from somewhere is bound by an approval
(session 12: each of these went out as approved with another host): an approved campaign's copy
in which only that construct's host changed is held again, the reason naming the new and the
removed host with their kind; the approved copy with other paths flows. Over SMTP.

AMP's `action-xhr` is tried in the HTML part: in an AMP for Email part the markup is the part's
text as well (content.py), so another host there was held before, as a bare URL or as changed
text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.test_review_bound import reason
from tests.e2e.test_review_links import TEXT_LINK, approved_base, page, smtp_html
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e
Start = Callable[..., SendguardProcess]

# name -> (markup of the construct with its host `{h}` and a path `{p}`, the kinds it counts as)
CONSTRUCTS = {
    "formaction": ('<form><button formaction="https://{h}/{p}">Go</button></form>', ["link"]),
    "actionxhr": ('<form method="post" action-xhr="https://{h}/{p}"></form>', ["link"]),
    "object": ('<object data="https://{h}/{p}.svg" type="image/svg+xml"></object>', ["embed"]),
    "refresh": ('<meta http-equiv="refresh" content="600; url=https://{h}/{p}">', ["link"]),
    # a style block's text is text too: its URL is a bare one there (a link) as well
    "import": ('<style>@import "https://{h}/{p}.css";</style>', ["embed", "link"]),
    "imageset": (
        '<div style="background-image: image-set(&quot;https://{h}/{p}.png&quot; 1x)"></div>',
        ["embed"],
    ),
    "svgimage": ('<svg width="1" height="1"><image href="https://{h}/{p}.png"/></svg>', ["embed"]),
    "svglink": ('<svg width="1" height="1"><a xlink:href="https://{h}/{p}"></a></svg>', ["link"]),
    "ping": ('<a href="https://shop.example/{p}" ping="https://{h}/{p}">Ping</a>', ["link"]),
    # the base is a link, and the relative image loads from its host
    "base": ('<base href="https://{h}/{p}/"><img src="logo.png" alt="">', ["embed", "link"]),
    "srcset": ('<img SRCSET="https://{h}/{p}.png 1x" alt="">', ["embed"]),
    "srcdoc": ('<iframe srcdoc="<a href=&quot;https://{h}/{p}&quot;>x</a>"></iframe>', ["link"]),
}


def constructs(changed: str = "", path: str = "a") -> str:
    """All the constructs, each on its own host `<name>.shop.example`; `changed`'s on
    `<name>.evil.example`; one a line (an SMTP line has at most 998 characters)."""
    return "\r\n".join(
        markup.format(h=f"{name}.{'evil' if name == changed else 'shop'}.example", p=path)
        for name, (markup, _) in CONSTRUCTS.items()
    )


def change(name: str) -> str:
    """The reason's end when only `name`'s host changed."""
    kinds = CONSTRUCTS[name][1]
    new = [f"new {kind} host {name}.evil.example" for kind in kinds]
    removed = [f"removed {kind} host {name}.shop.example" for kind in kinds]
    return "; ".join(new + removed)


def test_each_construct_with_another_host_is_held_naming_it(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=[{"plugin": "human_hold"}])

    def send(rcpt: str, html: str) -> str:
        return smtp_html(proc, rcpt, html)

    approved_base(proc, lambda rcpt, _: send(rcpt, page(link=TEXT_LINK + constructs())))
    ids = {
        name: send(f"{name}@example.org", page(link=TEXT_LINK + constructs(changed=name)))
        for name in CONSTRUCTS
    }
    same = send("same@example.org", page(link=TEXT_LINK + constructs(path="other")))
    proc.wait_states({"same@example.org": "sent"}, same)
    for name, message_id in ids.items():
        rcpt = f"{name}@example.org"
        proc.wait_states({rcpt: "held"}, message_id)
        why = reason(proc, rcpt)
        assert "campaign spring: links changed since" in why, (name, why)
        assert why.endswith(change(name)), (name, why)
    received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == ["first@example.org", "same@example.org"]
