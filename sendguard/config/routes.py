"""What `check-config` finds wrong with `upstreams:` and `routes:` beyond each entry's own
shape: a route to an upstream that is not configured, a route that can never match because
an earlier one takes everything it would, and routes with nowhere to send the rest."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from sendguard.config.models import Config, RouteOptions
from sendguard.errors import ConfigProblem


def _describe(conditions: dict[str, str]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in conditions.items())


def route_problems(config: Config) -> list[ConfigProblem]:
    """Every problem of a validated config's routes, each with its field path
    (`routes[1].upstream`)."""
    return _problems(
        config.upstreams, list(enumerate(config.routes)), "upstream" in config.model_fields_set
    )


def route_problems_unvalidated(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """The same for a config that failed validation elsewhere, so check-config lists these
    with the rest; the routes that are invalid themselves are reported by validation."""
    raw = data.get("routes")
    named = data.get("upstreams")
    if not isinstance(raw, list) or not isinstance(named, dict | None):
        return []
    routes: list[tuple[int, RouteOptions]] = []
    for index, item in enumerate(raw):
        try:
            routes.append((index, RouteOptions.model_validate(item)))
        except ValidationError:
            continue
    # An invalid route might have been the default: do not claim one is missing.
    has_default = "upstream" in data or len(routes) < len(raw)
    return _problems(list(named or {}), routes, has_default)


def _problems(
    upstreams: Collection[str], routes: Sequence[tuple[int, RouteOptions]], has_default: bool
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    known = ", ".join(sorted(upstreams)) or "none"
    for position, (index, route) in enumerate(routes):
        where = f"routes[{index}]"
        if route.upstream not in upstreams:
            problems.append(
                ConfigProblem(
                    f"{where}.upstream",
                    f"no upstream named {route.upstream!r} under upstreams; configured: {known}",
                )
            )
        conditions = route.conditions()
        for before, earlier in routes[:position]:
            taken = earlier.conditions()
            # The first match wins: an earlier route asking for a subset of these
            # conditions takes every delivery this one would.
            if taken.items() <= conditions.items():
                why = (
                    "has no conditions (it takes every delivery)"
                    if not taken
                    else f"takes every delivery this one would ({_describe(taken)})"
                )
                problems.append(
                    ConfigProblem(where, f"can never match: routes[{before}] comes first and {why}")
                )
                break
    catch_all = any(not route.conditions() for _, route in routes)
    if routes and not catch_all and not has_default:
        # Without this the rest would go to the embedded default, the outbox folder:
        # nothing would be sent and nobody told.
        problems.append(
            ConfigProblem(
                "upstream",
                "routes need a default for the deliveries no route matches: set upstream, "
                "or end routes with one without conditions",
            )
        )
    return problems
