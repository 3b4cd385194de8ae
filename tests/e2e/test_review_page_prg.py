"""The review page's decisions answer with a redirect (Post/Redirect/Get), driven in a real
headless Chromium: reloading the page a decision led to, or going back, does not decide again
(today's user trial found a reload audited a second `approve-campaign … 0`)."""

from __future__ import annotations

from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, unquote, urlencode
from urllib.request import Request, build_opener

import pytest

from tests.e2e import test_review_page
from tests.e2e.test_review_page import (
    HOLD,
    USERS,
    Counter,
    NoRedirect,
    Start,
    _open,
    audit,
    base,
    post,
    send_held,
    sign_in,
    signed_in,
    wait_for,
)
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

# The browser and the request counter of the review page's tests (fixtures, by name).
browser = test_review_page.browser
counter = test_review_page.counter


def notices(chrome: Any) -> list[str]:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return [p.text for p in chrome.find_elements(By.CSS_SELECTOR, "main p.notice")]


def decisions(proc: Any) -> list[tuple[str, str, int]]:
    return [(e["action"], e["target"], e["count"]) for e in audit(proc)]


def test_approving_a_campaign_then_reloading_or_going_back_approves_it_once(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    send_held(proc, "ann@example.org", counter, "Spring sale")
    send_held(proc, "ben@example.org", counter, "Spring sale")
    sign_in(browser, proc, "ana")
    browser.find_element(By.NAME, "note").send_keys("copy checked")
    browser.find_element(By.XPATH, "//button[text()='Approve campaign']").click()
    wait_for(lambda: notices(browser) == ["Campaign spring-sale approved: 2 deliveries."])
    assert browser.current_url == base(proc) + "/review"  # a GET page, not the POST's answer
    assert "Nothing is held for review" in browser.page_source
    sink.wait_for(2)
    assert decisions(proc) == [("approve-campaign", "campaign:spring-sale", 2)]

    browser.refresh()
    wait_for(lambda: "Nothing is held for review" in browser.page_source)
    assert notices(browser) == []  # shown once; the page itself tells the state
    browser.back()  # to the queue as it was before the approval: asked again, not cached
    wait_for(lambda: browser.current_url == base(proc) + "/review")
    assert "Nothing is held for review" in browser.page_source
    assert "2 held" not in browser.page_source
    browser.forward()
    browser.refresh()
    wait_for(lambda: "Nothing is held for review" in browser.page_source)
    assert decisions(proc) == [("approve-campaign", "campaign:spring-sale", 2)]
    assert len(sink.received) == 2


def test_approving_and_rejecting_a_delivery_then_reloading_decides_once(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    approved = send_held(proc, "ann@example.org", counter, "Spring sale")
    rejected = send_held(proc, "ben@example.org", counter, "Spring sale")
    sign_in(browser, proc, "ana")

    browser.get(base(proc) + f"/review/deliveries/{approved}")
    browser.find_element(By.XPATH, "//button[text()='Approve']").click()
    wait_for(lambda: any("Delivery to ann@example.org: approved" in n for n in notices(browser)))
    assert browser.current_url == base(proc) + "/review"
    proc.wait_states({"ann@example.org": "sent", "ben@example.org": "held"})
    browser.refresh()
    wait_for(lambda: "ben@example.org" in browser.page_source)
    assert notices(browser) == []
    assert decisions(proc) == [("approve", f"delivery:{approved}", 1)]

    # The row's own Reject in the queue, filtered: the redirect keeps the filter.
    browser.get(base(proc) + "/review?recipient=ben%40example.org")
    row = browser.find_element(By.CSS_SELECTOR, "li.row")
    row.find_element(By.XPATH, ".//button[text()='Reject']").click()
    wait_for(lambda: notices(browser) == ["Delivery to ben@example.org: rejected (dropped)."])
    assert unquote(browser.current_url) == base(proc) + "/review?recipient=ben@example.org"
    browser.refresh()
    wait_for(lambda: "Nothing is held for review" in browser.page_source)
    assert notices(browser) == []
    proc.wait_states({"ann@example.org": "sent", "ben@example.org": "dropped"})
    assert decisions(proc) == [
        ("reject", f"delivery:{rejected}", 1),
        ("approve", f"delivery:{approved}", 1),
    ]


def test_a_refused_decision_answers_its_error_and_sending_it_again_changes_nothing(
    sendguard: Start, sink: Sink, counter: Counter
) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS})
    held = send_held(proc, "ann@example.org", counter, "Spring sale")
    session, csrf = signed_in(proc)
    path = f"/review/deliveries/{held}/approve"
    status, _ = post(proc, path, {"csrf_token": csrf, "next": "/review?page=1"}, session)
    assert status == 303
    proc.wait_states({"ann@example.org": "sent"})
    for _ in range(2):  # what a reload of the refusal sends
        status, body = post(proc, path.replace("approve", "reject"), {"csrf_token": csrf}, session)
        assert status == 409 and "is sent, not held" in body
    assert decisions(proc) == [("approve", f"delivery:{held}", 1)]


def test_the_notice_names_what_was_done_escaped_and_the_303_leads_to_a_page_of_ours(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS})
    session, csrf = signed_in(proc)
    name = quote("<b>x</b>", safe="")
    for next_page in ("https://evil.example/", "/review?campaign=autumn"):
        request = Request(
            base(proc) + f"/review/campaigns/{name}/approve",
            data=urlencode({"csrf_token": csrf, "next": next_page}).encode(),
            method="POST",
        )
        request.add_header("Origin", base(proc))
        request.add_header("Cookie", f"sendguard_session={session}")
        try:
            with build_opener(NoRedirect).open(request, timeout=10) as resp:
                status, location = resp.status, resp.headers["Location"]
        except HTTPError as err:
            status, location = err.code, err.headers["Location"]
        assert status == 303
        assert location == ("/review" if next_page.startswith("https") else next_page)
    page = Request(base(proc) + "/review")
    page.add_header("Cookie", f"sendguard_session={session}")
    status, body = _open(page)
    assert status == 200
    assert "Campaign &lt;b&gt;x&lt;/b&gt; approved: 0 deliveries." in body
    assert "<b>x</b>" not in body
