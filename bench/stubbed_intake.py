"""`sendguard serve` whose intake answers HTTP sends with an earlier one's answer.

    python bench/stubbed_intake.py serve --config sendguard.yaml --workers 1

What is left of a `POST /v1/messages` is the HTTP path's own work: aiohttp, the `guard`
middleware, reading, validating and building the message, the answer. bench/http_cost.py's
`callgrind --path` counts its instructions. HTTP sends are judged and committed as always
until one is forwarded (queued: the bench's campaign is approved); every later one is read,
checked and built as always and then handed to the intake, which returns that answer at
once: nothing is decided, committed or sent. SMTP sends (the bench's approval) are not
touched.
"""

from __future__ import annotations

import sys
from typing import Any

from sendguard import cli, intake
from sendguard.message import DeliveryState

_real_accept = intake.Intake.accept
_first: list[intake.Accepted] = []


async def _accept(self: intake.Intake, *args: Any, **kwargs: Any) -> intake.Accepted:
    ingress = args[3] if len(args) > 3 else kwargs.get("ingress")
    if _first and ingress == "http":
        return _first[0]
    accepted = await _real_accept(self, *args, **kwargs)
    if ingress == "http" and all(d.state is DeliveryState.QUEUED for d in accepted.deliveries):
        _first.append(accepted)
    return accepted


intake.Intake.accept = _accept  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
