"""The handlers of the review page: sign-in, queue, preview, actions, timeline and audit."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from sendguard.approvals import Approval
from sendguard.clock import Clock
from sendguard.config import ReviewOptions
from sendguard.deliveries import DeliveryQuery, DeliveryRecord
from sendguard.errors import Conflict
from sendguard.identity import Identity, Role
from sendguard.ingress.http_context import Handler, api
from sendguard.ingress.route import Auth, Route
from sendguard.message import Delivery, DeliveryState, HoldOrigin
from sendguard.password import DECOY_HASH, verify_password
from sendguard.phrasing import human_duration
from sendguard.review import APPROVE, CAMPAIGN_ACTIONS, CampaignAction, NotFound
from sendguard.review_page.guard import (
    PAGE_REFERRER_POLICY,
    Provenance,
    provenance,
    public_origin,
    safe_next,
    secure_frame,
    secure_page,
)
from sendguard.review_page.preview import preview
from sendguard.review_page.sessions import (
    Session,
    attempt_sign_in,
    find_session,
    signed_in,
    start_session,
    throttle_keys,
)
from sendguard.review_queue import HeldQuery

if TYPE_CHECKING:
    import jinja2

SESSION_COOKIE = "sendguard_session"
LOGIN_CSRF_COOKIE = "sendguard_login_csrf"
# Set by a failed sign-in's 303 for the sign-in form it leads to, which shows (and drops) it.
LOGIN_NOTICE_COOKIE = "sendguard_login_notice"
LOGIN_NOTICES = {"failed": "Wrong user name or password."}
# Browsers send the Fetch Metadata that proves a form is the page's own only to HTTPS and
# localhost; over plain HTTP elsewhere, `no-referrer` leaves nothing to tell it from another site.
UNSAID_MESSAGE = (
    "Your browser did not say where this form came from. Open the review page over HTTPS "
    "(or on localhost)."
)
PAGE_SIZE = 50
NO_CAMPAIGN = ""

_DONE = {"approve": "approved", "reject": "rejected"}

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ReviewPage:
    """The page's configuration in this process (accounts, session lifetime) and its clock;
    sessions and the sign-in throttle are in the store, shared by every process."""

    config: ReviewOptions
    clock: Clock
    public_origin: str | None = None
    """The origin of `review.public_url`, whose forms are this page's too."""
    _templates: jinja2.Environment | None = field(default=None, init=False, repr=False)

    def templates(self) -> jinja2.Environment:
        """The page's templates (autoescaped), loaded with Jinja2 when the first page is
        shown: most servers never show one, and importing Jinja2 cost every start about 5 %
        of its instructions."""
        if self._templates is None:
            import jinja2  # noqa: PLC0415 (see above)

            env = jinja2.Environment(
                loader=jinja2.PackageLoader("sendguard.review_page", "templates"),
                autoescape=True,
            )
            clock = self.clock
            env.filters["ago"] = lambda at: human_duration(clock.now() - at) if at else ""
            env.filters["left"] = _left(clock)
            env.filters["utc"] = lambda at: at.strftime("%Y-%m-%d %H:%M UTC") if at else ""
            self._templates = env
        return self._templates


PAGE: web.AppKey[ReviewPage] = web.AppKey("review_page", ReviewPage)


def install_pages(app: web.Application, config: ReviewOptions, clock: Clock) -> None:
    """Add the review page's sign-in, queue, preview, actions, timeline and audit."""
    app[PAGE] = ReviewPage(config, clock, public_origin(config.public_url))


def page_routes() -> list[Route]:
    """The page's sign-in, queue, preview, actions, timeline and audit (HTML, not in the
    OpenAPI document; each page checks the sign-in cookie itself)."""
    pages: list[tuple[str, str, Handler]] = [
        ("GET", "/review", queue),
        ("GET", "/review/login", login_form),
        ("POST", "/review/login", login),
        ("POST", "/review/logout", logout),
        ("GET", "/review/static/review.css", stylesheet),
        ("GET", "/review/deliveries/{id}", show_delivery),
        ("GET", "/review/deliveries/{id}/frame", delivery_frame),
    ]
    for action in ("approve", "reject"):
        pages.append(("POST", f"/review/deliveries/{{id}}/{action}", _delivery_action(action)))
        pages.append(("POST", f"/review/selection/{action}", _selection_action(action)))
    for verb, campaign_action in CAMPAIGN_ACTIONS.items():
        pages.append(
            ("POST", f"/review/campaigns/{{name}}/{verb}", _campaign_action(campaign_action))
        )
    pages += [("GET", "/review/timeline", timeline), ("GET", "/review/audit", audit)]
    return [session_page(method, path, handler) for method, path, handler in pages]


def session_page(method: str, path: str, handler: Handler) -> Route:
    """A review page route: behind the page's own sign-in, not documented as API."""
    name = f"page {method} {path}"
    return Route(
        method, path, handler, name, name, ("review page",), {}, Auth.SESSION, documented=False
    )


def _left(clock: Clock) -> Callable[[datetime | None], str]:
    def left(at: datetime | None) -> str:
        if at is None:
            return "never"
        remaining = at - clock.now()
        return "due now" if remaining <= timedelta(0) else human_duration(remaining)

    return left


def page_state(request: web.Request) -> ReviewPage:
    return request.app[PAGE]


def came_from(request: web.Request) -> Provenance:
    """Where a form comes from: this page is at the origin the request came to and at
    `review.public_url`'s."""
    return provenance(request, page_state(request).public_origin)


async def current_session(request: web.Request, *, notice: bool = False) -> Session | None:
    """The signed-in session of the request's cookie, if any; with `notice`, for a page
    that shows what the form before it did (the notice is taken from the store then)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    page = page_state(request)
    store = api(request).store
    return await find_session(store, token, page.config.users, page.clock.now(), take_notice=notice)


def render(
    request: web.Request, template: str, context: Mapping[str, Any], status: int = 200
) -> web.StreamResponse:
    """A page; a signed-in page that is not an error also shows, once, what the form before
    it did (the notice `see_outcome` left, taken by `current_session(notice=True)`)."""
    shown = dict(context)
    session = shown.get("session")
    if isinstance(session, Session) and status < 400:
        shown["notice"] = session.notice
    html = page_state(request).templates().get_template(template).render(shown)
    response = web.Response(status=status, text=html, content_type="text/html", charset="utf-8")
    return secure_page(response)


def message_page(
    request: web.Request, session: Session | None, status: int, title: str, text: str
) -> web.StreamResponse:
    context = {"session": session, "title": title, "text": text, "status": status}
    return render(request, "message.html", context, status=status)


def to_login() -> web.StreamResponse:
    return secure_page(web.HTTPSeeOther("/review/login"))


def _see(location: str) -> web.StreamResponse:
    return secure_page(web.HTTPSeeOther(location))


async def see_outcome(
    request: web.Request, session: Session, text: str, location: str
) -> web.StreamResponse:
    """A state change that worked: `303 See Other` to a page (GET) that shows `text` once, so
    reloading or going back never sends the form again."""
    await api(request).store.leave_notice(session.key, text)
    return _see(location)


# --- signing in and out ------------------------------------------------------------------


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.StreamResponse:
    token = secrets.token_urlsafe(32)
    response = render(
        request, "login.html", {"csrf": token, "error": error, "session": None}, status
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/review/login",
    )
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    """The sign-in form (or the queue, for someone signed in); after a failed sign-in, once,
    with what went wrong."""
    if await current_session(request) is not None:
        return _see("/review")
    notice = LOGIN_NOTICES.get(request.cookies.get(LOGIN_NOTICE_COOKIE, ""), "")
    response = _login_page(request, notice)
    if LOGIN_NOTICE_COOKIE in request.cookies:
        response.del_cookie(LOGIN_NOTICE_COOKIE, path="/review/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """Check the password; on success start a session (cookie only, never in a URL)."""
    form = await request.post()
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = str(form.get("csrf_token", ""))
    came = came_from(request)
    if came is Provenance.UNSAID:
        return message_page(request, None, 403, "Forbidden", UNSAID_MESSAGE)
    if (
        came is not Provenance.HERE
        or not expected
        or not secrets.compare_digest(expected.encode(), token.encode())
    ):
        return message_page(request, None, 403, "Forbidden", "The sign-in form was not ours.")
    page = page_state(request)
    now = page.clock.now()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    keys = throttle_keys(username, request.remote or "-")
    store = api(request).store
    # Counted as failed now, before the password is checked, and forgiven if it was right.
    wait = await attempt_sign_in(store, keys, now)
    if wait is not None:
        response = _login_page(
            request,
            f"Too many failed sign-ins. Try again in {human_duration(wait)}.",
            429,
        )
        response.headers["Retry-After"] = str(max(1, int(wait.total_seconds())))
        return response
    user = page.config.users.get(username)
    stored = user.password_hash if user is not None else DECOY_HASH
    # scrypt takes tens of milliseconds: not on the event loop
    matches = await asyncio.to_thread(verify_password, password, stored)
    if user is None or not matches:
        # Post/Redirect/Get: reloading what follows shows the form again, counts nothing.
        failed = _see("/review/login")
        failed.set_cookie(
            LOGIN_NOTICE_COOKIE,
            "failed",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/review/login",
            max_age=300,
        )
        return failed
    await signed_in(store, keys, now)
    session = await start_session(
        store,
        Identity(username, Role(user.role)),
        user.password_hash,
        page.config.session_lifetime,
        now,
    )
    response = _see("/review")
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/review",
        max_age=int(page.config.session_lifetime.total_seconds()),
    )
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/review/login")
    return response


async def checked_form(
    request: web.Request,
) -> tuple[Session, Mapping[str, Any]] | web.StreamResponse:
    """The session and form of a state change, or the 403 that refuses it."""
    session = await current_session(request)
    if session is None:
        return message_page(request, None, 403, "Forbidden", "Sign in first.")
    form = await request.post()
    came = came_from(request)
    if came is Provenance.UNSAID:
        return message_page(request, session, 403, "Forbidden", UNSAID_MESSAGE)
    if came is not Provenance.HERE:
        return message_page(request, session, 403, "Forbidden", "The request came from elsewhere.")
    if not session.csrf_matches(str(form.get("csrf_token", ""))):
        return message_page(
            request, session, 403, "Forbidden", "The form has expired; reload the page."
        )
    return session, form


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session."""
    checked = await checked_form(request)
    if isinstance(checked, web.StreamResponse):
        return checked
    session, _ = checked
    await api(request).store.end_session(session.key)
    response = _see("/review/login")
    response.del_cookie(SESSION_COOKIE, path="/review")
    return response


async def stylesheet(request: web.Request) -> web.StreamResponse:
    """The page's only style sheet, shipped in the package (no CDN)."""
    css = resources.files("sendguard.review_page").joinpath("static/review.css").read_bytes()
    response = web.Response(body=css, content_type="text/css", charset="utf-8")
    response.headers["Cache-Control"] = "max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = PAGE_REFERRER_POLICY
    return response


# --- the queue --------------------------------------------------------------------------


@dataclass
class Group:
    """Held deliveries of one campaign (or of none) in the queue."""

    campaign: str
    count: int = 0
    oldest: datetime | None = None
    expires: datetime | None = None
    state: str = "pending"
    paused: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


def reasons_of(delivery: Delivery, record: DeliveryRecord) -> tuple[list[str], list[str]]:
    """The reasons it is held (in words) and the policies holding it, from its record."""
    latest = max((o.at for o in record.outcomes), default=None)
    holding = [
        o.outcome
        for o in record.outcomes
        if o.at == latest
        and o.outcome.verdict.action.value == "hold"
        and o.outcome.mode.value == "enforce"
    ]
    if delivery.hold_origin is HoldOrigin.PAUSE or not holding:
        steps = record.transitions
        return ([steps[-1].reason] if steps else []), [delivery.hold_origin or HoldOrigin.PAUSE]
    return [f"{o.policy}: {o.verdict.reason}" for o in holding], [o.policy for o in holding]


async def _reasons(request: web.Request, delivery: Delivery) -> tuple[list[str], list[str]]:
    records = await api(request).store.delivery_records([delivery.id])
    return reasons_of(delivery, records[delivery.id])


async def queue(request: web.Request) -> web.StreamResponse:
    """Held deliveries grouped by campaign, with counts, reasons, age and time left.

    The store aggregates the groups and picks the page (one scan off the event loop); the
    reasons of the page's rows come in one batch: the cost does not grow with the queue.
    """
    session = await current_session(request, notice=True)
    if session is None:
        return to_login()
    q = request.query
    campaign = q.get("campaign", "").strip() or None
    recipient = q.get("recipient", "").strip() or None
    policy = q.get("policy", "").strip() or None
    try:
        number = max(1, int(q.get("page", "1")))
    except ValueError:
        number = 1
    store = api(request).store
    query = HeldQuery(campaign, recipient, policy, (number - 1) * PAGE_SIZE, PAGE_SIZE)
    found = await store.held_queue(query)
    pages = max(1, -(-found.total // PAGE_SIZE))
    if number > pages:  # past the end (the queue shrank): show the last page
        number = pages
        found = await store.held_queue(replace(query, offset=(number - 1) * PAGE_SIZE))
    groups = {
        g.campaign or NO_CAMPAIGN: Group(g.campaign or "", g.count, g.oldest, g.expires)
        for g in found.groups
    }
    summaries = {c.name: c for c in found.reviewed}
    for name, group in groups.items():
        known = summaries.get(name)
        if known is not None:
            group.paused = known.paused
            group.state = (
                "paused"
                if known.paused and known.approval is not Approval.REJECTED
                else known.approval.value
                if known.approval
                else "pending"
            )
    records = await store.delivery_records([d.id for d in found.deliveries])
    visible: list[Group] = []
    for delivery in found.deliveries:
        group = groups[delivery.campaign or NO_CAMPAIGN]
        if not visible or visible[-1] is not group:
            visible.append(group)
        reasons, _ = reasons_of(delivery, records[delivery.id])
        group.rows.append({"delivery": delivery, "reasons": reasons})
    paused = [
        {"name": name, "state": "paused"}
        for name, c in summaries.items()
        if c.paused and name not in groups
    ]
    filters = {
        k: v for k, v in (("campaign", campaign), ("recipient", recipient), ("policy", policy)) if v
    }
    return render(
        request,
        "queue.html",
        {
            "session": session,
            "groups": visible,
            "total": found.total,
            "campaign_count": len(groups),
            "filters": filters,
            "page": number,
            "pages": pages,
            "prev_url": _url(filters, number - 1) if number > 1 else None,
            "next_url": _url(filters, number + 1) if number < pages else None,
            "paused": paused,
            "here": request.path_qs,
        },
    )


def _url(filters: Mapping[str, str], page: int) -> str:
    return "/review?" + urlencode({**filters, "page": str(page)})


# --- one message --------------------------------------------------------------------------


async def _recent(request: web.Request, recipient: str, limit: int = 20) -> list[dict[str, Any]]:
    store = api(request).store
    page = await store.list_deliveries(DeliveryQuery(recipient=recipient, limit=limit))
    rows = []
    for delivery in page.deliveries:
        steps = await store.transitions(delivery.id)
        rows.append({"delivery": delivery, "reason": steps[-1].reason if steps else ""})
    return rows


async def show_delivery(request: web.Request) -> web.StreamResponse:
    """A held message as its recipient would see it, beside the recipient's recent timeline."""
    session = await current_session(request, notice=True)
    if session is None:
        return to_login()
    store = api(request).store
    delivery = await store.get_delivery(request.match_info["id"])
    if delivery is None:
        return message_page(request, session, 404, "Not found", "There is no such delivery.")
    shown = preview(await store.message_content(delivery.message.id))
    reasons, _ = (
        await _reasons(request, delivery) if delivery.state is DeliveryState.HELD else ([], [])
    )
    events = await store.events(delivery.recipient)
    return render(
        request,
        "preview.html",
        {
            "session": session,
            "delivery": delivery,
            "preview": shown,
            "reasons": reasons,
            "transitions": await store.transitions(delivery.id),
            "timeline": await _recent(request, delivery.recipient),
            "events": list(reversed(events))[:20],
            "edited": await store.edit_making(delivery.message.id),
            "here": request.path,
        },
    )


async def delivery_frame(request: web.Request) -> web.StreamResponse:
    """The HTML part alone, for the sandboxed iframe: nothing in it runs or loads."""
    session = await current_session(request)
    if session is None:
        return secure_frame(web.Response(status=403, text="sign in first"))
    store = api(request).store
    delivery = await store.get_delivery(request.match_info["id"])
    if delivery is None:
        return secure_frame(web.Response(status=404, text="no such delivery"))
    shown = preview(await store.message_content(delivery.message.id))
    html = shown.html if shown.html is not None else "<p>(this message has no HTML part)</p>"
    return secure_frame(web.Response(text=html, content_type="text/html", charset="utf-8"))


# --- decisions ----------------------------------------------------------------------------


def refuse_viewer(request: web.Request, session: Session) -> web.StreamResponse | None:
    if session.identity.may_decide:
        return None
    return message_page(
        request, session, 403, "Forbidden", f"{session.identity.name} may look but not decide."
    )


async def _decide(
    request: web.Request,
    act: Callable[[Session, str], Awaitable[str]],
    ask: Callable[[Session, Mapping[str, Any]], Awaitable[web.StreamResponse]] | None = None,
) -> web.StreamResponse:
    """Check the request, run `act(session, note)`, and go back (303) to the form's `next`
    page, which shows what it did; with `ask`, a form without `confirm=yes` is first answered
    with a confirmation (which changes nothing)."""
    checked = await checked_form(request)
    if isinstance(checked, web.StreamResponse):
        return checked
    session, form = checked
    refused = refuse_viewer(request, session)
    if refused is not None:
        return refused
    if ask is not None and form.get("confirm") != "yes":
        return await ask(session, form)
    note = str(form.get("note", "")).strip()[:2000]
    try:
        outcome = await act(session, note)
    except NotFound as exc:
        return message_page(request, session, 404, "Not found", str(exc))
    except Conflict as exc:
        return message_page(request, session, 409, "Not possible", str(exc))
    return await see_outcome(
        request, session, outcome, safe_next(str(form.get("next", "")) or None)
    )


def _delivery_action(action: str) -> PageHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        review = api(request).review
        ident = request.match_info["id"]

        async def act(session: Session, note: str) -> str:
            run = review.approve_delivery if action == "approve" else review.reject_delivery
            delivery = await run(ident, session.identity.name, note)
            return f"Delivery to {delivery.recipient}: {_DONE[action]} ({delivery.state.value})."

        return await _decide(request, act)

    return handle


def _selection_action(action: str) -> PageHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        review = api(request).review
        form = await request.post()
        ids = [str(v) for v in form.getall("id", [])]

        async def act(session: Session, note: str) -> str:
            if not ids:
                return "Nothing was selected."
            run = review.approve_delivery if action == "approve" else review.reject_delivery
            done, skipped = 0, 0
            for ident in ids:
                try:
                    await run(ident, session.identity.name, note)
                    done += 1
                except Conflict:  # reviewed meanwhile, or gone
                    skipped += 1
            text = f"{_DONE[action].capitalize()} {done} deliveries."
            return text + (f" {skipped} were no longer held." if skipped else "")

        return await _decide(request, act)

    return handle


def _campaign_action(action: CampaignAction) -> PageHandler:
    confirm = action is not APPROVE  # approving releases held mail only: no second step

    async def handle(request: web.Request) -> web.StreamResponse:
        review = api(request).review
        name = request.match_info["name"]

        async def act(session: Session, note: str) -> str:
            outcome = await review.on_campaign(action, name, session.identity.name, note)
            return f"Campaign {name} {action.done}: {outcome.count} deliveries."

        async def ask(session: Session, form: Mapping[str, Any]) -> web.StreamResponse:
            context = {
                "session": session,
                "action": action.verb,
                "campaign": name,
                "note": str(form.get("note", "")),
                "next": safe_next(str(form.get("next", "")) or None),
            }
            return render(request, "confirm.html", context)

        return await _decide(request, act, ask if confirm else None)

    return handle


# --- looking back -------------------------------------------------------------------------


async def timeline(request: web.Request) -> web.StreamResponse:
    """Everything an address was sent, spared or is waiting for."""
    session = await current_session(request, notice=True)
    if session is None:
        return to_login()
    address = request.query.get("address", "").strip()
    rows = await _recent(request, address, limit=100) if address else []
    events = list(reversed(await api(request).store.events(address))) if address else []
    return render(
        request,
        "timeline.html",
        {"session": session, "address": address, "rows": rows, "events": events},
    )


async def audit(request: web.Request) -> web.StreamResponse:
    """Who decided what, when, with which note, about how many deliveries."""
    session = await current_session(request, notice=True)
    if session is None:
        return to_login()
    entries = await api(request).store.audit(200)
    return render(request, "audit.html", {"session": session, "entries": entries})
