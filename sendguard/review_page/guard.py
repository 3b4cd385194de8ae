"""What every page answer carries, and what every state change must prove.

A state change (any POST) needs the session's CSRF token in the form and a same-origin
`Origin` (or, when a browser sends none, `Referer`); `SameSite=Strict` on the cookie is a third
wall. Page answers forbid scripts, framing and referrers; the message preview, the one frame,
gets its own stricter policy that also forbids every remote load.
"""

from __future__ import annotations

from aiohttp import web

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# The preview of a message's HTML: inline styles render, nothing runs, nothing is fetched.
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox"
)
# `no-referrer` would also make browsers send `Origin: null` with the page's own forms,
# which the same-origin check below must refuse; `same-origin` sends nothing to any other site.
PAGE_REFERRER_POLICY = "same-origin"


def secure_page(response: web.StreamResponse) -> web.StreamResponse:
    """The headers of every page answer."""
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = PAGE_REFERRER_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def secure_frame(response: web.StreamResponse) -> web.StreamResponse:
    """The headers of the message preview, shown only inside the page's own iframe."""
    response.headers["Content-Security-Policy"] = FRAME_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def same_origin(request: web.Request) -> bool:
    """True if the request says it comes from a page of this very origin."""
    expected = f"{request.scheme}://{request.host}"
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == expected
    referer = request.headers.get("Referer")
    return referer is not None and (referer == expected or referer.startswith(expected + "/"))


def safe_next(value: str | None, default: str = "/review") -> str:
    """Where to go after a form: a path of this page only (never another site)."""
    if value and value.startswith("/review") and "//" not in value and "\\" not in value:
        return value
    return default
