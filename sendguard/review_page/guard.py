"""What every page answer carries, and what every state change must prove.

A state change (any POST) needs the session's CSRF token in the form and proof that it comes
from a page of this origin (`from_here`); `SameSite=Strict` on the cookie is a third wall. Page
answers forbid scripts, framing and referrers; the message preview, the one frame, gets its own
stricter policy that also forbids every remote load.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from urllib.parse import urlsplit

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
# `no-referrer` also makes browsers send `Origin: null` with the page's own forms; `from_here`
# then relies on Fetch Metadata (`Sec-Fetch-Site`), which the policy does not hide.
PAGE_REFERRER_POLICY = "no-referrer"


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


class Provenance(enum.Enum):
    """Where a state change says it comes from."""

    HERE = "here"  # a page of this origin
    ELSEWHERE = "elsewhere"  # another origin, a sandboxed or opaque page, or the address bar
    UNSAID = "unsaid"  # the browser hid its origin and sent no Fetch Metadata to prove it


def from_here(
    expected: str | Collection[str],
    origin: str | None,
    referer: str | None,
    fetch_site: str | None,
) -> Provenance:
    """Decide where a request comes from, given this origin (`scheme://host[:port]`), or the
    origins that are all this page (as the request came, and as `review.public_url` says).

    `Sec-Fetch-Site` is set by the browser from the request's real initiator, whatever the
    referrer policy, and no page can set it (a `Sec-` header); a sandboxed or `data:` page is
    `cross-site`, so when present it decides alone. `Origin: null` is what the page's own forms
    send under `no-referrer` — but also what any sandboxed, `data:` or other-origin form sends,
    so without Fetch Metadata it proves nothing. Browsers send Fetch Metadata only to
    potentially trustworthy origins (HTTPS, localhost); a script sends neither `null` nor it.
    """
    origins = {expected} if isinstance(expected, str) else set(expected)
    if fetch_site is not None and fetch_site != "same-origin":
        return Provenance.ELSEWHERE
    if origin is not None and origin != "null":
        return Provenance.HERE if origin in origins else Provenance.ELSEWHERE
    # Some browsers leave `Origin` out of a same-origin POST; their `Referer` then tells. Beside
    # `Origin: null` it proves nothing (a sandboxed frame of this origin sends both).
    if origin is None and referer is not None:
        ours = any(referer == o or referer.startswith(o + "/") for o in origins)
        return Provenance.HERE if ours else Provenance.ELSEWHERE
    if fetch_site == "same-origin":
        return Provenance.HERE
    return Provenance.UNSAID


def origin_of(scheme: str, host: str) -> str:
    """An origin as browsers write it in `Origin`: lowercase, no default port."""
    scheme, host = scheme.lower(), host.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host.removesuffix(default)
    return f"{scheme}://{host}"


def public_origin(public_url: str | None) -> str | None:
    """The origin of `review.public_url` (where people reach the page), if it is set."""
    if not public_url:
        return None
    parts = urlsplit(public_url)
    return origin_of(parts.scheme, parts.netloc)


def provenance(request: web.Request, public: str | None = None) -> Provenance:
    """`from_here` for an incoming request: this page's origin is the one the request came
    to (as its client made it, behind a trusted proxy) and `public`, the origin of
    `review.public_url`: a proxy that passes neither scheme nor host still serves the page
    at the origin the operator configured."""
    here = {origin_of(request.scheme, request.host)}
    if public is not None:
        here.add(public)
    return from_here(
        here,
        request.headers.get("Origin"),
        request.headers.get("Referer"),
        request.headers.get("Sec-Fetch-Site"),
    )


def safe_next(value: str | None, default: str = "/review") -> str:
    """Where to go after a form: a path of this page only (never another site)."""
    if value and value.startswith("/review") and "//" not in value and "\\" not in value:
        return value
    return default
