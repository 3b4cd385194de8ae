"""Administration over HTTP: `POST /v1/admin/reload` reads the config again, as SIGHUP does.

The answer comes once every worker process has reloaded (or could not) and names what was
applied, what needs a restart and each worker's result; an invalid config is refused with
400 and every problem with its field path (as `check-config` prints them), and the running
config stays. The reload is audited under the API token's name.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sendguard.errors import ConfigError
from sendguard.ingress.http_context import identity
from sendguard.reload import Reloader, ReloadOutcome

RELOADER: web.AppKey[Reloader] = web.AppKey("reloader", Reloader)


def invalid_config(exc: ConfigError, message: str, prefix: str = "") -> web.Response:
    """400 with every problem and its field path as `check-config` prints them (under
    `prefix` when the config is part of a request body); `field` names the first."""
    paths = [f"{prefix}.{p.path}" if prefix and p.path else p.path or prefix for p in exc.problems]
    error: dict[str, Any] = {
        "code": "invalid_config",
        "message": message,
        "problems": [
            {"field": path, "message": p.message}
            for path, p in zip(paths, exc.problems, strict=True)
        ],
    }
    if paths and paths[0]:
        error["field"] = paths[0]
    return web.json_response({"error": error}, status=400)


async def reload_config(request: web.Request) -> web.Response:
    """Reload the config file the server was started with."""
    reloader = request.app[RELOADER]
    try:
        outcome = await reloader.reload(identity(request).name)
    except ConfigError as exc:
        return invalid_config(
            exc,
            f"the config was not reloaded ({len(exc.problems)} problem(s)); "
            "the running config stays",
        )
    return web.json_response(
        {
            "reloaded": outcome.everywhere,
            "hash": outcome.digest,
            "previous_hash": outcome.previous,
            "source": outcome.source,
            "applied": list(outcome.applied),
            "restart_required": list(outcome.restart_required),
            "tls_certificate": _certificate(outcome),
            "workers": [worker.as_dict() for worker in outcome.workers],
        }
    )


def _certificate(outcome: ReloadOutcome) -> dict[str, object] | None:
    """The SMTP certificate new connections get, and why a new one was not taken."""
    if outcome.certificate is None and outcome.certificate_problem is None:
        return None
    answer: dict[str, object] = {"sha256": outcome.certificate, "reloaded": True}
    if outcome.certificate_problem is not None:
        problem = outcome.certificate_problem
        answer["reloaded"] = False
        answer["problem"] = {"field": problem.path, "message": problem.message}
    return answer
