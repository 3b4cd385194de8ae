"""Issue 12: the review page, driven as people drive it — in a real headless Chromium — and
as a hostile page or script would, with plain HTTP."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sendguard.password import hash_password
from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

Start = Callable[..., SendguardProcess]
# Screenshots are test artifacts (build/screenshots, look at them after a run); `make
# screenshots` writes them into docs/img instead, so a test run never changes tracked files.
IMG = Path(
    os.environ.get(
        "SENDGUARD_SCREENSHOTS", Path(__file__).resolve().parents[2] / "build" / "screenshots"
    )
)
IMG.mkdir(parents=True, exist_ok=True)
HASHES = {"ana": hash_password("ana-password"), "vic": hash_password("vic-password")}
USERS = {
    "ana": {"password_hash": HASHES["ana"], "role": "reviewer"},
    "vic": {"password_hash": HASHES["vic"], "role": "viewer"},
}
HOLD = [{"plugin": "human_hold"}]


class Counter:
    """A local web server that counts every request (a remote image or a script's beacon),
    and serves one page of another origin (a hostile site) when given one."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.page = b""
        self.referrer_policy = ""  # sent with the hostile page when set
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/evil.html":
                    body = counter.page
                else:
                    counter.paths.append(self.path)
                    body = b""
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                if counter.referrer_policy:
                    self.send_header("Referrer-Policy", counter.referrer_policy)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def counter() -> Iterator[Counter]:
    server = Counter()
    yield server
    server.server.shutdown()
    server.server.server_close()


def chromium(*extra: str) -> Iterator[Any]:
    """Headless Chromium (Debian's chromium and chromium-driver) on a profile of its own, with
    `extra` arguments; skipped where they are missing, failed under CI (.ci/run installs them).
    A fixture's body: `yield from chromium()`."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        message = "needs Debian's chromium and chromium-driver (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver  # noqa: PLC0415 - only when a browser is there
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    with tempfile.TemporaryDirectory() as profile:
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            *extra,
        ):
            options.add_argument(arg)
        chrome = webdriver.Chrome(options=options, service=Service(driver))
        chrome.set_page_load_timeout(30)
        try:
            yield chrome
        finally:
            chrome.quit()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def held_html(counter: Counter) -> str:
    return (
        "<html><body><h1 style='color:#1f5fbf'>Spring sale: 30% off</h1>"
        f"<img src='{counter.url('/pixel.png')}' alt='hero'>"
        "<script>document.body.setAttribute('data-ran', 'yes');"
        f"new Image().src = '{counter.url('/script-ran')}';</script>"
        "<p>Dear Ann, everything in the garden shop is 30% off this week.</p>"
        "<p><a href='https://shop.example/track?u=1'>See the offer</a></p></body></html>"
    )


def hold_plain(
    proc: SendguardProcess, to: str = "ann@example.org", campaign: str = "spring-sale"
) -> str:
    """A message of `campaign` (plain text, no remote content) held for review by `HOLD`; its
    delivery's id."""
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "news@shop.example",
            "to": [to],
            "subject": "Spring sale",
            "text": "Everything is 30% off.",
            "campaign": campaign,
        },
    )
    assert status == 202 and answer["deliveries"][0]["state"] == "held", answer
    return str(answer["deliveries"][0]["id"])


def send_held(proc: SendguardProcess, to: str, counter: Counter, subject: str) -> str:
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "news@shop.example",
            "to": [to],
            "subject": subject,
            "text": "Everything is 30% off: https://shop.example/sale",
            "html": held_html(counter),
            "campaign": "spring-sale",
        },
    )
    assert status == 202 and answer["deliveries"][0]["state"] == "held", answer
    return str(answer["deliveries"][0]["id"])


def base(proc: SendguardProcess) -> str:
    return f"http://127.0.0.1:{proc.http_port}"


def sign_in(chrome: Any, proc: SendguardProcess, user: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    chrome.delete_all_cookies()
    chrome.get(base(proc) + "/review")
    assert chrome.current_url.endswith("/review/login")
    chrome.find_element(By.ID, "username").send_keys(user)
    chrome.find_element(By.ID, "password").send_keys(f"{user}-password")
    chrome.find_element(By.CSS_SELECTOR, "button[type=submit].primary").click()
    wait_for(lambda: "Held for review" in chrome.page_source)


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def audit(proc: SendguardProcess) -> list[dict[str, Any]]:
    status, answer = proc.call("GET", "/v1/audit")
    assert status == 200
    return list(answer["entries"])


def test_a_reviewer_signs_in_previews_safely_and_approves_the_campaign(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    first = send_held(proc, "ann@example.org", counter, "Spring sale: 30% off")
    send_held(proc, "ben@example.org", counter, "Spring sale: 30% off")

    sign_in(browser, proc, "ana")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "spring-sale" in text and "2 held" in text
    assert "human_hold: campaign spring-sale is not approved" in text
    assert "expires in" in text and "oldest hold" in text
    browser.save_screenshot(str(IMG / "review-queue.png"))
    browser.set_window_size(360, 800)  # a phone: nothing may need sideways scrolling
    try:
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 360
        browser.save_screenshot(str(IMG / "review-queue-360.png"))
    finally:
        browser.set_window_size(1280, 900)

    browser.find_element(By.LINK_TEXT, "Spring sale: 30% off").click()
    wait_for(lambda: "As the recipient sees it" in browser.page_source)
    assert f"/review/deliveries/{first}" in browser.current_url or "ben@" in browser.page_source
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "news@shop.example" in page and "See the offer → https://shop.example/track?u=1" in page
    assert counter.url("/pixel.png") in page  # the placeholder names the remote image
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.frame")
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    wait_for(lambda: "garden shop" in browser.find_element(By.TAG_NAME, "body").text)
    body = browser.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-ran") is None  # the script did not run
    assert "remote image not loaded" in body.text
    browser.switch_to.default_content()
    browser.save_screenshot(str(IMG / "review-preview.png"))
    assert counter.paths == []  # neither the image nor the script's beacon was requested

    browser.get(base(proc) + "/review")
    browser.find_element(By.NAME, "note").send_keys("copy checked")
    browser.find_element(By.XPATH, "//button[text()='Approve campaign']").click()
    wait_for(lambda: "Campaign spring-sale approved: 2 deliveries" in browser.page_source)
    sink.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["ann@example.org", "ben@example.org"]
    entry = audit(proc)[0]
    assert (entry["actor"], entry["action"], entry["note"]) == (
        "ana",
        "approve-campaign",
        "copy checked",
    )
    assert counter.paths == []


def test_rejecting_one_with_a_note_drops_it_and_the_audit_names_the_reviewer(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    doomed = send_held(proc, "ann@example.org", counter, "Spring sale")
    send_held(proc, "ben@example.org", counter, "Spring sale")
    sign_in(browser, proc, "ana")
    browser.get(base(proc) + f"/review/deliveries/{doomed}")
    browser.find_element(By.NAME, "note").send_keys("Ann asked for no offers")
    browser.find_element(By.XPATH, "//button[text()='Reject']").click()
    wait_for(lambda: "rejected (dropped)" in browser.page_source)
    proc.wait_states({"ann@example.org": "dropped", "ben@example.org": "held"})

    browser.get(base(proc) + "/review/audit")
    row = browser.find_element(By.CSS_SELECTOR, "table.audit tbody tr").text
    assert "ana" in row and "reject" in row and "Ann asked for no offers" in row
    entry = audit(proc)[0]
    assert (entry["actor"], entry["target"], entry["note"]) == (
        "ana",
        f"delivery:{doomed}",
        "Ann asked for no offers",
    )
    browser.get(base(proc) + "/review/timeline?address=ann%40example.org")
    assert (
        "rejected by ana: Ann asked for no offers" in browser.find_element(By.TAG_NAME, "main").text
    )


def test_a_cross_origin_form_and_a_post_without_csrf_token_change_nothing(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    held = send_held(proc, "ann@example.org", counter, "Spring sale")
    sign_in(browser, proc, "ana")
    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    # Another origin (same host, other port: the same site, so the cookie is sent) posts a
    # form to the page, even knowing the CSRF token: its Origin gives it away.
    counter.page = (
        f"<form id=f method=post action='{base(proc)}/review/deliveries/{held}/approve'>"
        f"<input name=csrf_token value='{csrf}'><input name=note value=evil></form>"
        "<script>document.getElementById('f').submit()</script>"
    ).encode()
    browser.get(counter.url("/evil.html"))
    wait_for(lambda: "came from elsewhere" in browser.page_source)
    # Hiding its origin as the page itself does (`no-referrer`: `Origin: null`) does not help
    # it: Chromium still says `Sec-Fetch-Site: same-site`.
    counter.referrer_policy = "no-referrer"
    browser.get(counter.url("/evil.html"))
    wait_for(lambda: "came from elsewhere" in browser.page_source)

    cookie = browser.get_cookie("sendguard_session")["value"]
    status, _ = post(proc, f"/review/deliveries/{held}/approve", {"note": "x"}, cookie)
    assert status == 403  # same origin, no CSRF token
    status, _ = post(
        proc, f"/review/deliveries/{held}/approve", {"note": "x", "csrf_token": "guess"}, cookie
    )
    assert status == 403
    status, _ = post(
        proc,
        f"/review/deliveries/{held}/approve",
        {"csrf_token": csrf},
        cookie,
        origin="http://evil.example",
    )
    assert status == 403
    assert proc.states() == {"ann@example.org": "held"}
    assert audit(proc) == []


def test_a_viewer_sees_the_queue_but_cannot_approve(
    sendguard: Start, sink: Sink, counter: Counter, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc = sendguard(policies=HOLD, review={"users": USERS})
    held = send_held(proc, "ann@example.org", counter, "Spring sale")
    sign_in(browser, proc, "vic")
    assert "spring-sale" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_elements(By.XPATH, "//button[text()='Approve campaign']") == []
    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    cookie = browser.get_cookie("sendguard_session")["value"]
    status, body = post(proc, "/review/campaigns/spring-sale/approve", {"csrf_token": csrf}, cookie)
    assert status == 403 and "may look but not decide" in body
    status, _ = post(proc, f"/review/deliveries/{held}/approve", {"csrf_token": csrf}, cookie)
    assert status == 403
    assert proc.states() == {"ann@example.org": "held"}


def post(
    proc: SendguardProcess,
    path: str,
    fields: dict[str, str],
    cookie: str | None,
    origin: str | None = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """A form POST as a script would send it; Origin is the page's own unless given (None:
    no Origin at all); `headers` are added as they are (a browser's Fetch Metadata)."""
    request = urllib.request.Request(
        base(proc) + path, data=urllib.parse.urlencode(fields).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if origin is not None:
        request.add_header("Origin", origin or base(proc))
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if cookie is not None:
        request.add_header("Cookie", f"sendguard_session={cookie}")
    return _open(request)


def _open(request: urllib.request.Request) -> tuple[int, str]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def login_form(proc: SendguardProcess) -> tuple[str, str, dict[str, str]]:
    """GET the sign-in form: its CSRF field, the cookie that goes with it, the headers."""
    request = urllib.request.Request(base(proc) + "/review/login")
    with urllib.request.urlopen(request, timeout=10) as resp:
        page = resp.read().decode()
        headers = dict(resp.headers.items())
        cookie = resp.headers["Set-Cookie"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    return token.group(1), cookie.split(";")[0], headers


def sign_in_by_post(proc: SendguardProcess, user: str, password: str) -> tuple[int, dict[str, str]]:
    token, cookie, _ = login_form(proc)
    request = urllib.request.Request(
        base(proc) + "/review/login",
        data=urllib.parse.urlencode(
            {"username": user, "password": password, "csrf_token": token}
        ).encode(),
        method="POST",
    )
    request.add_header("Origin", base(proc))
    request.add_header("Cookie", cookie)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as err:
        status, headers = err.code, err.headers
    found = dict(headers.items())
    sessions = [c for c in headers.get_all("Set-Cookie") or [] if "sendguard_session=" in c]
    if sessions:
        found["Set-Cookie"] = sessions[0]
    return status, found


def test_session_cookie_headers_logout_and_throttled_sign_in(sendguard: Start, sink: Sink) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS, "session_lifetime": "1h"})
    _, _, headers = login_form(proc)
    assert headers["X-Frame-Options"] == "DENY"
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none' rules
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"

    status, answer = sign_in_by_post(proc, "ana", "ana-password")
    assert status == 303 and answer["Location"] == "/review"
    cookie = answer["Set-Cookie"]
    session = cookie.split(";")[0].split("=", 1)[1]
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags
    assert "max-age=3600" in flags and session not in answer["Location"]

    # Signed in: the queue; signed out (with the page's CSRF token): back to the sign-in form.
    request = urllib.request.Request(base(proc) + "/review")
    request.add_header("Cookie", f"sendguard_session={session}")
    status, page = _open(request)
    assert status == 200 and "Held for review" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    status, _ = post(proc, "/review/logout", {"csrf_token": csrf.group(1)}, session)
    assert status == 303
    status, _ = _open(request)
    assert status == 303  # the old cookie opens nothing

    # The session cookie of a sign-in is needed for the page, a token is not enough.
    status, answer = sign_in_by_post(proc, "ana", "wrong")
    assert status == 303 and answer["Location"] == "/review/login"  # a reload counts nothing
    for _ in range(4):
        sign_in_by_post(proc, "ana", "wrong")
    status, answer = sign_in_by_post(proc, "ana", "ana-password")
    assert status == 429 and int(answer["Retry-After"]) > 0
    status, _ = sign_in_by_post(proc, "vic", "vic-password")
    assert status == 303  # another user is not locked out by ana's failures


def get(proc: SendguardProcess, path: str, cookie: str | None) -> tuple[int, dict[str, str]]:
    """GET a page (redirects not followed): its status and headers."""
    request = urllib.request.Request(base(proc) + path)
    if cookie is not None:
        request.add_header("Cookie", f"sendguard_session={cookie}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers.items())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items())


def signed_in(proc: SendguardProcess) -> tuple[str, str]:
    """Sign ana in by HTTP: her session id and the CSRF token of her pages."""
    status, answer = sign_in_by_post(proc, "ana", "ana-password")
    assert status == 303
    session = answer["Set-Cookie"].split(";")[0].split("=", 1)[1]
    request = urllib.request.Request(base(proc) + "/review")
    request.add_header("Cookie", f"sendguard_session={session}")
    _, page = _open(request)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    return session, csrf.group(1)


def test_every_review_page_answer_sends_no_referrer(
    sendguard: Start, sink: Sink, counter: Counter
) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS})
    held = send_held(proc, "ann@example.org", counter, "Spring sale")
    _, delivery = proc.call("GET", f"/v1/deliveries/{held}")
    message_id = delivery["message_id"]
    policies: dict[str, tuple[int, str | None]] = {}
    for path in ("/review", "/review/login", f"/review/deliveries/{held}"):
        status, headers = get(proc, path, None)
        policies[f"GET {path} signed out"] = (status, headers.get("Referrer-Policy"))
    session, csrf = signed_in(proc)
    for path in (
        "/review",
        "/review/login",
        f"/review/deliveries/{held}",
        f"/review/deliveries/{held}/frame",
        "/review/timeline?address=ann%40example.org",
        "/review/audit",
        f"/review/campaigns/spring-sale/edit?message={message_id}",
        "/review/campaigns/spring-sale/edits",
        "/review/static/review.css",
    ):
        status, headers = get(proc, path, session)
        policies[f"GET {path}"] = (status, headers.get("Referrer-Policy"))
    for path, fields, origin in (
        ("/review/campaigns/spring-sale/pause", {"csrf_token": csrf}, ""),  # confirmation page
        (f"/review/deliveries/{held}/approve", {"csrf_token": csrf}, "http://evil.example"),
        (f"/review/deliveries/{held}/approve", {"csrf_token": csrf}, ""),  # 303 to the page
    ):
        request = urllib.request.Request(
            base(proc) + path, data=urllib.parse.urlencode(fields).encode(), method="POST"
        )
        request.add_header("Origin", origin or base(proc))
        request.add_header("Cookie", f"sendguard_session={session}")
        try:
            with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as resp:
                status, headers = resp.status, dict(resp.headers.items())
        except urllib.error.HTTPError as err:
            status, headers = err.code, dict(err.headers.items())
        policies[f"POST {path} from {origin or 'here'}"] = (status, headers.get("Referrer-Policy"))
    statuses = {status for status, _ in policies.values()}
    assert {200, 303, 403} <= statuses, policies  # pages, redirects and refusals alike
    assert {policy for _, policy in policies.values()} == {"no-referrer"}, policies


def test_a_hidden_origin_counts_only_with_fetch_metadata_saying_same_origin(
    sendguard: Start, sink: Sink, counter: Counter
) -> None:
    proc = sendguard(policies=HOLD, review={"users": USERS})
    held = send_held(proc, "ann@example.org", counter, "Spring sale")
    session, csrf = signed_in(proc)
    path = f"/review/deliveries/{held}/approve"
    # What a browser sends under `no-referrer`: `Origin: null`, no Referer, and its own word
    # on the initiator. Only `same-origin` counts; a hostile page cannot set Sec- headers.
    for site in ("cross-site", "same-site", "none"):
        for origin in ("null", None, ""):  # "" is this very origin
            status, body = post(
                proc, path, {"csrf_token": csrf}, session, origin, {"Sec-Fetch-Site": site}
            )
            assert status == 403 and "came from elsewhere" in body, (site, origin)
    # A browser that hides the origin and sends no Fetch Metadata (plain HTTP off localhost)
    # cannot be told from another site's form.
    for origin in ("null", None):
        status, body = post(proc, path, {"csrf_token": csrf}, session, origin)
        assert status == 403 and "did not say where this form came from" in body
    status, _ = post(
        proc, path, {"csrf_token": csrf}, session, "null", {"Referer": base(proc) + "/review"}
    )
    assert status == 403  # beside `Origin: null` a Referer proves nothing
    # Fetch Metadata says same-origin, but the token or the session is missing.
    same = {"Sec-Fetch-Site": "same-origin"}
    for fields, cookie in (
        ({}, session),
        ({"csrf_token": "guess"}, session),
        ({"csrf_token": csrf}, None),
    ):
        status, _ = post(proc, path, fields, cookie, "null", same)
        assert status == 403
    status, _ = post(proc, path, {"csrf_token": csrf}, session, "http://evil.example", same)
    assert status == 403  # a real Origin of another site is never overruled
    assert proc.states() == {"ann@example.org": "held"}
    assert audit(proc) == []

    # The sign-in form too: a hidden origin from another site is refused.
    token, login_cookie, _ = login_form(proc)
    request = urllib.request.Request(
        base(proc) + "/review/login",
        data=urllib.parse.urlencode(
            {"username": "ana", "password": "ana-password", "csrf_token": token}
        ).encode(),
        method="POST",
    )
    request.add_header("Origin", "null")
    request.add_header("Sec-Fetch-Site", "same-site")
    request.add_header("Cookie", login_cookie)
    assert _open(request)[0] == 403

    status, _ = post(proc, path, {"csrf_token": csrf, "note": "fine"}, session, "null", same)
    assert status == 303
    proc.wait_states({"ann@example.org": "sent"})
    assert [(e["actor"], e["note"]) for e in audit(proc)] == [("ana", "fine")]
