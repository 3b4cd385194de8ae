"""nodemailer driven by tests/node/smtp.mjs (installed by `make node-sdks`), for the e2e tests."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.e2e.test_esp_node_sdks import NODE


def run_nodemailer(script: str, port: int, spec: dict[str, Any], context: str = "") -> Any:
    """nodemailer's info for each message of `spec` (smtp.mjs's JSON: `messages`, `pool`,
    `transport`) sent to 127.0.0.1:`port`; `context` is added to a failure's message."""
    done = subprocess.run(
        [NODE or "node", script, str(port), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"nodemailer failed: {done.stderr}\n{context}"
    return json.loads(done.stdout)
