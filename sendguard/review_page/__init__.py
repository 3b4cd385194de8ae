"""The review page: people sign in and decide about held mail in a browser (`GET /review`).

Server-rendered with Jinja2 (autoescaped) on the same aiohttp application as the API; the
actions call `sendguard.review.Review`, like the API does, under the signed-in identity.
"""

from __future__ import annotations

from aiohttp import web

from sendguard.clock import Clock
from sendguard.config import ReviewOptions
from sendguard.ingress.route import register
from sendguard.review_page import edit_pages
from sendguard.review_page.pages import install_pages, page_routes

__all__ = ["install"]


def install(app: web.Application, config: ReviewOptions, clock: Clock) -> None:
    """Add the review page to the API's application."""
    install_pages(app, config, clock)
    register(app, [*page_routes(), *edit_pages.edit_routes()])
