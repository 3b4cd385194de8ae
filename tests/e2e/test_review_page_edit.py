"""Issue 12: edit before approve, in a real headless Chromium — the reviewer corrects the subject
of a held campaign, approves it, and the corrected message is what leaves."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e import test_review_page
from tests.e2e.test_review_page import (
    HOLD,
    IMG,
    USERS,
    Counter,
    Start,
    audit,
    base,
    post,
    send_held,
    sign_in,
    wait_for,
)
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

# The browser and the request counter of the review page's tests (fixtures, by name).
browser = test_review_page.browser
counter = test_review_page.counter


def test_a_reviewer_edits_the_subject_and_the_edited_message_leaves(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    first = send_held(proc, "ann@example.org", counter, "Sprng sale: 30% off")
    send_held(proc, "ben@example.org", counter, "Sprng sale: 30% off")
    status, sent = proc.call("GET", f"/v1/deliveries/{first}")
    assert status == 200
    original = sent["message_id"]

    sign_in(browser, proc, "ana")
    browser.get(base(proc) + f"/review/deliveries/{first}")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Edit before approving").click()
    wait_for(lambda: "Edit campaign spring-sale before approving" in browser.page_source)
    subject = browser.find_element(By.ID, "subject")
    subject.clear()
    subject.send_keys("Spring sale: 30% off")
    browser.find_element(By.ID, "note").send_keys("typo in the subject")
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(IMG / "review-edit.png"))
    browser.find_element(By.XPATH, "//button[text()='Save the edit']").click()
    wait_for(lambda: "2 held deliveries now carry the edited message" in browser.page_source)

    # Nothing left: the edit only changed what is held.
    assert proc.states() == {"ann@example.org": "held", "ben@example.org": "held"}
    entry = audit(proc)[0]
    assert (entry["actor"], entry["action"], entry["target"], entry["count"]) == (
        "ana",
        "edit",
        "campaign:spring-sale",
        2,
    )
    assert "subject changed in 2 message(s)" in entry["note"]
    assert "typo in the subject" in entry["note"]
    browser.get(base(proc) + "/review/audit")
    browser.find_element(By.LINK_TEXT, "diff").click()
    wait_for(lambda: "Edits of campaign spring-sale" in browser.page_source)
    diff = browser.find_element(By.CSS_SELECTOR, "pre.diff").text
    browser.save_screenshot(str(IMG / "review-edit-diff.png"))
    assert "-Sprng sale: 30% off" in diff and "+Spring sale: 30% off" in diff
    browser.get(base(proc) + f"/review/deliveries/{first}")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Spring sale: 30% off" in page and "Edited by ana" in page
    # The sender still finds its delivery under its message id.
    status, answer = proc.call("GET", f"/v1/messages/{original}")
    assert status == 200 and [d["id"] for d in answer["deliveries"]] == [first]

    browser.get(base(proc) + "/review")
    browser.find_element(By.XPATH, "//button[text()='Approve campaign']").click()
    wait_for(lambda: "Campaign spring-sale approved: 2 deliveries" in browser.page_source)
    sink.wait_for(2)
    assert sorted(r.message["Subject"] for r in sink.received) == [
        "Spring sale: 30% off",
        "Spring sale: 30% off",
    ]
    # The rest of the message is as it was sent.
    assert all("garden shop" in r.content.decode() for r in sink.received)


def test_an_edit_needs_the_csrf_token_and_a_reviewer(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    held = send_held(proc, "ann@example.org", counter, "Sprng sale")
    status, delivery = proc.call("GET", f"/v1/deliveries/{held}")
    assert status == 200
    message_id = delivery["message_id"]
    fields = {"message": message_id, "subject": "Evil"}

    sign_in(browser, proc, "vic")
    cookie = browser.get_cookie("sendguard_session")["value"]
    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    status, body = post(
        proc, "/review/campaigns/spring-sale/edit", {**fields, "csrf_token": csrf}, cookie
    )
    assert status == 403 and "may look but not decide" in body

    sign_in(browser, proc, "ana")
    cookie = browser.get_cookie("sendguard_session")["value"]
    status, _ = post(proc, "/review/campaigns/spring-sale/edit", fields, cookie)
    assert status == 403
    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    status, _ = post(
        proc,
        "/review/campaigns/spring-sale/edit",
        {**fields, "csrf_token": csrf},
        cookie,
        origin="http://evil.example",
    )
    assert status == 403
    assert audit(proc) == []
    # Nothing changed in the form: refused, nothing recorded.
    status, body = post(
        proc,
        "/review/campaigns/spring-sale/edit",
        {"message": message_id, "subject": "Sprng sale", "csrf_token": csrf},
        cookie,
    )
    assert status == 409 and "nothing was changed" in body
    assert audit(proc) == []
