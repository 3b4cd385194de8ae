"""The ESPs' official Node SDKs (@sendgrid/mail, postmark, mailgun.js), changed only in base URL
and key, send through sendguard: forwarded, delayed by a cap, a campaign held then approved, and
the SDK resolves with the success it expects.

`make node-sdks` installs them from the npm registry into `.venv/node-sdks` (tests/node/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import TOKEN, SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

ROOT = Path(__file__).resolve().parents[2]
SDKS = Path(os.environ.get("SENDGUARD_NODE_SDKS", ROOT / ".venv" / "node-sdks"))
NODE = shutil.which("node")
POLICIES = [
    {
        "plugin": "frequency",
        "options": {"caps": [{"scope": "recipient", "limit": 1, "window": "1d"}]},
    },
    {"plugin": "human_hold", "options": {"hold_unapproved_campaigns": True}},
]


@pytest.fixture(scope="module")
def script() -> Path:
    if NODE is None or not (SDKS / "node_modules").is_dir():
        pytest.skip(f"the Node SDKs are not installed in {SDKS}; run `make node-sdks`")
    target = SDKS / "send.mjs"
    shutil.copyfile(ROOT / "tests" / "node" / "send.mjs", target)
    return target


def node_send(script: Path, esp: str, proc: SendguardProcess, **msg: Any) -> dict[str, Any]:
    spec = {"from": "news@shop.example", "text": "Hello", **msg}
    done = subprocess.run(
        [
            NODE or "node",
            str(script),
            esp,
            f"http://127.0.0.1:{proc.http_port}",
            TOKEN,
            json.dumps(spec),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"the {esp} SDK threw: {done.stderr}\n{proc.log()[-2000:]}"
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("esp", ["sendgrid", "postmark", "mailgun"])
def test_node_sdk_forwards_delays_and_holds(
    sendguard: Start, sink: Sink, script: Path, esp: str
) -> None:
    proc = sendguard(policies=POLICIES)

    answer = node_send(script, esp, proc, to=["ana@example.org"], subject="Welcome")
    if esp == "sendgrid":
        assert answer["statusCode"] == 202 and answer["messageId"]
    elif esp == "postmark":
        assert answer["ErrorCode"] == 0 and answer["MessageID"]
    else:
        assert answer["message"] == "Queued. Thank you." and answer["id"]
    proc.wait_states({"ana@example.org": "sent"})
    assert sink.wait_for(1)[0].message["Subject"] == "Welcome"

    node_send(script, esp, proc, to=["ana@example.org"], subject="Second")
    proc.wait_states({"ana@example.org": "delayed"})

    node_send(script, esp, proc, to=["ben@example.org"], subject="Launch", campaign="launch")
    proc.wait_states({"ben@example.org": "held"})
    assert proc.call("POST", "/v1/campaigns/launch/approve", {})[0] == 200
    proc.wait_states({"ben@example.org": "sent"})
    assert sorted(str(r.message["Subject"]) for r in sink.wait_for(2)) == ["Launch", "Welcome"]
