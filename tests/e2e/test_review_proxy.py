"""The review page behind a TLS-terminating reverse proxy: Debian's nginx on its own loopback
address in front of a real sendguard, driven by headless Chromium and by plain HTTPS clients
connecting from other loopback addresses (other people), as docs/review.md tells operators to
set it up (`http.trusted_proxies`)."""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_review_page import HOLD, USERS, chromium, hold_plain, wait_for
from tests.support.nginx import LISTEN_ADDRESS, PROXY_ADDRESS, Nginx, require_nginx
from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = pytest.mark.e2e

Start = Callable[..., SendguardProcess]
TRUSTED = {"trusted_proxies": [f"{PROXY_ADDRESS}/32"]}
# MAX_FAILURES_PER_ADDRESS in sendguard/review_page/sessions.py
PER_ADDRESS = 20


@pytest.fixture
def behind_nginx(sendguard: Start, tmp_path: Path) -> Iterator[Callable[..., tuple[Any, Nginx]]]:
    """Factory: a sendguard (with `sendguard`'s overrides) and nginx in front of it."""
    require_nginx()
    proxies: list[Nginx] = []

    def start(**sections: Any) -> tuple[SendguardProcess, Nginx]:
        proc = sendguard(**sections)
        headers = sections.get("http", {}).get("proxy_headers", "x-forwarded")
        proxy = Nginx(tmp_path, proc.http_port, headers)
        proxies.append(proxy)
        proxy.start()
        return proc, proxy

    yield start
    for proxy in proxies:
        proxy.stop()


@dataclass
class Client:
    """A person's HTTP client, connecting from `source` (a loopback address of its own) to
    `host:port`, over TLS when `context` is given; keeps its cookies as a browser would."""

    host: str
    port: int
    source: str
    context: ssl.SSLContext | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)
    """Every Set-Cookie header received, as it came (to read its flags)."""

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, http.client.HTTPResponse, str]:
        if self.context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host,
                self.port,
                timeout=15,
                context=self.context,
                source_address=(self.source, 0),
            )
        else:
            conn = http.client.HTTPConnection(
                self.host, self.port, timeout=15, source_address=(self.source, 0)
            )
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            self.set_cookies.append(cookie)
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if value and "max-age=0" not in cookie.lower():
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return response.status, response, text

    def sign_in(self, user: str, password: str, **headers: str) -> tuple[int, str]:
        """The sign-in form, then its POST (as the browser's own form: `Origin: null` under
        `no-referrer`, `Sec-Fetch-Site: same-origin`, unless `headers` say otherwise)."""
        status, _, page = self.request("GET", "/review/login")
        assert status == 200, page
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        sent = {"Origin": "null", "Sec-Fetch-Site": "same-origin", **headers}
        form = {"username": user, "password": password, "csrf_token": token.group(1)}
        status, response, text = self.request(
            "POST", "/review/login", form, **{k: v for k, v in sent.items() if v}
        )
        return status, response.headers.get("Location", "") or text


def through(proxy: Nginx, source: str) -> Client:
    """A client at `source` reaching the page through the proxy, over HTTPS."""
    return Client(LISTEN_ADDRESS, proxy.port, source, proxy.ssl_context())


def direct(proc: SendguardProcess, source: str) -> Client:
    """A client at `source` reaching sendguard's port itself, over plain HTTP."""
    return Client("127.0.0.1", proc.http_port, source)


def fail_sign_ins(client: Client, count: int, **headers: str) -> None:
    """`count` failed sign-ins, each with another user name (the per-name bound is lower)."""
    for n in range(count):
        status, location = client.sign_in(f"guess{n}", "wrong", **headers)
        assert (status, location) == (303, "/review/login"), (n, status, location)


@pytest.mark.parametrize("headers", ["x-forwarded", "forwarded"])
def test_failed_sign_ins_through_the_proxy_lock_out_only_their_own_client_address(
    behind_nginx: Callable[..., tuple[SendguardProcess, Nginx]], headers: str
) -> None:
    """Everyone comes from nginx's address: without trusting it, one guesser's 20 failures
    locked every reviewer out (429). Trusted, each client is counted by its own address, and
    what a client writes in forwarding headers itself (nginx appends the real address to
    X-Forwarded-For, replaces Forwarded, passes on the kind it does not write) changes
    nothing."""
    trusted = {**TRUSTED, "proxy_headers": headers}
    _, proxy = behind_nginx(policies=HOLD, review={"users": USERS}, http=trusted)
    guesser = through(proxy, "127.0.0.2")
    fail_sign_ins(guesser, PER_ADDRESS)
    assert guesser.sign_in("vic", "vic-password")[0] == 429  # even with a right password
    # The guesser posing as others through the proxy is still the guesser.
    status, _ = guesser.sign_in("vic", "vic-password", X_Forwarded_For="198.51.100.7")
    assert status == 429
    status, _ = guesser.sign_in(
        "vic", "vic-password", Forwarded="for=198.51.100.8", X_Real_IP="198.51.100.9"
    )
    assert status == 429

    reviewer = through(proxy, "127.0.0.3")
    assert reviewer.sign_in("ana", "ana-password") == (303, "/review")
    status, _, page = reviewer.request("GET", "/review")
    assert status == 200 and "Held for review" in page


def test_forwarding_headers_from_an_untrusted_peer_are_ignored(
    behind_nginx: Callable[..., tuple[SendguardProcess, Nginx]],
) -> None:
    """A client reaching sendguard's port itself, not through the trusted proxy, cannot pick
    its throttle key, scheme or host by writing forwarding headers."""
    proc, _ = behind_nginx(policies=HOLD, review={"users": USERS}, http=TRUSTED)
    spoofer = direct(proc, "127.0.0.4")
    for n in range(PER_ADDRESS):
        status, location = spoofer.sign_in(
            f"guess{n}",
            "wrong",
            X_Forwarded_For=f"198.51.100.{n}",
            Forwarded=f"for=203.0.113.{n}",
        )
        assert (status, location) == (303, "/review/login")
    status, _ = spoofer.sign_in("ana", "ana-password", X_Forwarded_For="198.51.100.99")
    assert status == 429
    # Posing as https through a proxy: the cookie stays what plain HTTP gets.
    other = direct(proc, "127.0.0.6")
    status, _ = other.sign_in("ana", "ana-password", X_Forwarded_Proto="https")
    assert status == 303
    session = [c for c in other.set_cookies if c.startswith("sendguard_session=")]
    assert session and "secure" not in session[0].lower()
    # Nor can it say it is at another origin: its form, with that origin, is refused.
    status, text = direct(proc, "127.0.0.7").sign_in(
        "ana",
        "ana-password",
        Origin="https://review.test",
        Sec_Fetch_Site="",
        X_Forwarded_Host="review.test",
        X_Forwarded_Proto="https",
    )
    assert status == 403 and "not ours" in text


def test_cookies_are_secure_and_a_form_with_only_origin_is_ours_over_https_through_the_proxy(
    behind_nginx: Callable[..., tuple[SendguardProcess, Nginx]],
) -> None:
    """nginx speaks plain HTTP to sendguard: without X-Forwarded-Proto and -Host believed,
    sendguard saw http://127.0.0.1:port, left the Secure flag off the cookies of https users
    and refused a form whose browser sent only `Origin: https://public-host` (no Fetch
    Metadata) as another site's."""
    _, proxy = behind_nginx(policies=HOLD, review={"users": USERS}, http=TRUSTED)
    client = through(proxy, "127.0.0.2")
    status, location = client.sign_in("ana", "ana-password", Origin=proxy.origin, Sec_Fetch_Site="")
    assert (status, location) == (303, "/review")
    # The sign-in form's CSRF cookie and the session's (not the deletion of the former).
    given = [c for c in client.set_cookies if "max-age=0" not in c.lower()]
    assert len(given) == 2
    for cookie in given:
        assert "; secure" in cookie.lower(), cookie
    # Another origin is still another origin.
    other = through(proxy, "127.0.0.3")
    status, text = other.sign_in(
        "ana", "ana-password", Origin="https://evil.example", Sec_Fetch_Site=""
    )
    assert status == 403 and "not ours" in text


def test_public_url_names_the_origin_when_the_proxy_passes_neither_scheme_nor_host(
    sendguard: Start,
) -> None:
    """A proxy that forwards no X-Forwarded-Proto or -Host (nor the Host header): the forms of
    `review.public_url`'s origin are the page's own."""
    proc = sendguard(
        policies=HOLD,
        review={"users": USERS, "public_url": "https://review.test/"},
        http=TRUSTED,
    )
    client = direct(proc, "127.0.0.2")
    status, location = client.sign_in(
        "ana", "ana-password", Origin="https://review.test", Sec_Fetch_Site=""
    )
    assert (status, location) == (303, "/review")
    status, text = direct(proc, "127.0.0.3").sign_in(
        "ana", "ana-password", Origin="https://review.test:8443", Sec_Fetch_Site=""
    )
    assert status == 403 and "not ours" in text


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium that accepts the proxy's self-signed certificate."""
    yield from chromium("--ignore-certificate-errors")


def test_a_reviewer_signs_in_and_approves_through_the_proxy_in_chromium(
    behind_nginx: Callable[..., tuple[SendguardProcess, Nginx]], sink: Sink, browser: Any
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    proc, proxy = behind_nginx(policies=HOLD, review={"users": USERS}, http=TRUSTED)
    hold_plain(proc, "ann@example.org")
    hold_plain(proc, "ben@example.org")

    browser.get(proxy.origin + "/review")
    assert browser.current_url == proxy.origin + "/review/login"
    browser.find_element(By.ID, "username").send_keys("ana")
    browser.find_element(By.ID, "password").send_keys("ana-password")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit].primary").click()
    wait_for(lambda: "Held for review" in browser.page_source)
    cookie = browser.get_cookie("sendguard_session")
    assert cookie is not None and cookie["secure"] is True and cookie["httpOnly"] is True

    browser.find_element(By.NAME, "note").send_keys("checked behind nginx")
    browser.find_element(By.XPATH, "//button[text()='Approve campaign']").click()
    wait_for(lambda: "Campaign spring-sale approved: 2 deliveries" in browser.page_source)
    assert browser.current_url.startswith(proxy.origin + "/review")
    sink.wait_for(2)
    status, answer = proc.call("GET", "/v1/audit")
    assert status == 200
    entry = answer["entries"][0]
    assert (entry["actor"], entry["action"]) == ("ana", "approve-campaign")


def test_notifications_behind_a_proxy_without_public_url_are_warned_about(
    sendguard: Start,
) -> None:
    """Links in notifications are built from `review.public_url`, else `http.listen`: behind a
    trusted proxy the latter is no address people can open, and the log says so at start."""
    notify = {"email_to": ["review@example.org"]}
    proc = sendguard(policies=HOLD, review={"users": USERS, "notify": notify}, http=TRUSTED)
    assert warnings_of(proc) == ["review.public_url"]
    proc.stop()
    configured = {"users": USERS, "notify": notify, "public_url": "https://review.test"}
    proc = sendguard(policies=HOLD, review=configured, http=TRUSTED)  # the same log file
    assert warnings_of(proc) == []


def warnings_of(proc: SendguardProcess) -> list[str]:
    """The settings the log warned about at the start of `proc` (by its listen address), each
    once: under `serve --workers N` every worker logs its start (make test-workers)."""
    listen = proc.config["http"]["listen"]
    return sorted(
        {
            e["event"].split(" ")[0]
            for e in proc.log_events()
            if e.get("level") == "warning" and e.get("listen") == listen
        }
    )


def test_a_message_sent_through_the_proxy_names_its_client_in_received(
    behind_nginx: Callable[..., tuple[SendguardProcess, Nginx]], sink: Sink
) -> None:
    """The API behind the proxy: the `Received:` line of an HTTP-submitted message names the
    client's address, not the proxy's."""
    _, proxy = behind_nginx(http=TRUSTED)
    client = through(proxy, "127.0.0.2")
    body = '{"from": "a@shop.example", "to": ["ann@example.org"], "subject": "Hi", "text": "x"}'
    conn = http.client.HTTPSConnection(
        LISTEN_ADDRESS,
        proxy.port,
        timeout=15,
        context=client.context,
        source_address=("127.0.0.2", 0),
    )
    try:
        conn.request(
            "POST",
            "/v1/messages",
            body=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 202
    finally:
        conn.close()
    sink.wait_for(1)
    received = str(sink.received[0].message["Received"])
    assert "HTTP client ([127.0.0.2])" in received and PROXY_ADDRESS not in received
