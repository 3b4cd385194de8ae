"""The review page: people sign in and decide about held mail in a browser (`GET /review`).

Server-rendered with Jinja2 (autoescaped) on the same aiohttp application as the API; the
actions call `sendguard.review.Review`, like the API does, under the signed-in identity.
"""

from sendguard.review_page.pages import install

__all__ = ["install"]
