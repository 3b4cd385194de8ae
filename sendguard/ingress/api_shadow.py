"""The shadow report over HTTP: `GET /v1/policies/shadow?since=7d`.

For each policy in shadow mode (configured now, or that gave shadow verdicts in the window):
how many verdicts of each kind it gave, the latest deliveries it would have treated otherwise
than forward with its reasons, and the recipients it would have affected most. The counts are
those of `sendguard_decisions_total{mode="shadow"}` over the same window.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sendguard.duration import parse_window
from sendguard.ingress.api_admin import RELOADER
from sendguard.ingress.http_context import api
from sendguard.ingress.payloads import BadRequest
from sendguard.ingress.queries import MAX_EXAMPLES, MAX_TOP
from sendguard.ingress.views import when
from sendguard.reports import ShadowTally
from sendguard.verdict import Action, Mode


def _bounded(request: web.Request, name: str, default: int, most: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        raise BadRequest(f"{name}: must be a whole number", name) from None
    if not 0 <= value <= most:
        raise BadRequest(f"{name}: must be between 0 and {most}", name)
    return value


def tally_view(tally: ShadowTally) -> dict[str, Any]:
    """One policy's part of the report."""
    counts = {a.value: tally.counts.get(a.value, 0) for a in Action}
    return {
        "policy": tally.policy,
        "total": sum(counts.values()),
        "counts": counts,
        "examples": [
            {
                "delivery_id": e.delivery_id,
                "recipient": e.recipient,
                "campaign": e.campaign,
                "verdict": e.verdict,
                "reason": e.reason,
                "at": when(e.at),
                "until": when(e.until),
            }
            for e in tally.examples
        ],
        "recipients": [{"recipient": r, "count": n} for r, n in tally.recipients],
    }


async def shadow_report(request: web.Request) -> web.Response:
    """What each shadow policy would have done since `since` (default 7d)."""
    try:
        since = parse_window(request.query.get("since", "7d"))
    except ValueError as exc:
        raise BadRequest(f"since: {exc}", "since") from None
    examples = _bounded(request, "examples", 5, MAX_EXAMPLES)
    top = _bounded(request, "top", 10, MAX_TOP)
    ctx = api(request)
    now = ctx.clock.now()
    start = now - since
    found = await ctx.store.shadow_tallies(start, examples=examples, top=top)
    tallies = {t.policy: t for t in found}
    configured = [
        p.name for p in request.app[RELOADER].settings.policies if p.config.mode is Mode.SHADOW
    ]
    names = configured + sorted(set(tallies) - set(configured))
    return web.json_response(
        {
            "since": when(start),
            "until": when(now),
            "policies": [
                {
                    **tally_view(tallies.get(name) or ShadowTally(name, {}, (), ())),
                    "configured_as_shadow": name in configured,
                }
                for name in names
            ],
        }
    )
