"""WordPress's mailer, PHPMailer, set up as WordPress's SMTP plugins set it up
(docs/integrations.md), sends through sendguard: a transactional mail passes at once, a
newsletter's campaign is held for review, a thank-you mail waits for its premise and a no-show
fact drops it.

Runs Debian's libphp-phpmailer and, where Debian's `wordpress` is installed, the copy WordPress
bundles (`php-cli` and `libphp-phpmailer`; .ci/run installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import SendguardProcess
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

SCRIPT = Path(__file__).resolve().parents[1] / "php" / "send.php"
PHP = shutil.which("php")
PHPMAILERS = {
    "debian": Path("/usr/share/php/libphp-phpmailer"),
    "wordpress": Path("/usr/share/wordpress/wp-includes/PHPMailer"),
}
POLICIES = [
    {"plugin": "context", "options": {"max_wait": "6h", "on_timeout": "forward"}},
    {"plugin": "human_hold", "options": {"hold_unapproved_campaigns": True}},
]


@pytest.fixture(params=sorted(PHPMAILERS))
def phpmailer(request: pytest.FixtureRequest) -> Path:
    where = PHPMAILERS[request.param]
    if PHP is None or not where.is_dir():
        package = "libphp-phpmailer" if request.param == "debian" else "wordpress"
        pytest.skip(f"needs php-cli and Debian's {package} ({where})")
    return where


def php_send(phpmailer: Path, proc: SendguardProcess, **msg: Any) -> dict[str, Any]:
    spec = {"from": "wordpress@shop.example", "text": "Hello", **msg}
    args = [str(SCRIPT), str(phpmailer), "127.0.0.1", str(proc.smtp_port), json.dumps(spec)]
    done = subprocess.run(
        [PHP or "php", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"PHPMailer failed: {done.stderr}\n{proc.log()[-2000:]}"
    return dict(json.loads(done.stdout))


def test_phpmailer_transactional_campaign_and_premise(
    sendguard: Start, sink: Sink, phpmailer: Path
) -> None:
    proc = sendguard(policies=POLICIES)

    order = php_send(
        phpmailer,
        proc,
        to=["Ann@Example.org"],
        subject="Your order #1001",
        headers={"X-Sendguard-Class": "transactional"},
    )
    # PHPMailer reads sendguard's queue id with its Postfix pattern: the message's id.
    assert order["sent"] is True
    proc.wait_states({"Ann@Example.org": "sent"}, order["queued_as"])
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == ["Ann@Example.org"]
    assert received.message["Subject"] == "Your order #1001"
    assert received.message["X-Mailer"].startswith("PHPMailer ")
    assert not [h for h in received.message if h.lower().startswith("x-sendguard-")]

    news = php_send(
        phpmailer,
        proc,
        to=["bob@example.org"],
        subject="Our December newsletter",
        headers={"X-Sendguard-Campaign": "wp-newsletter"},
    )
    assert proc.states(news["queued_as"]) == {"bob@example.org": "held"}
    status, _ = proc.call("POST", "/v1/campaigns/wp-newsletter/approve", {"note": "copy ok"})
    assert status == 200
    proc.wait_states({"bob@example.org": "sent"}, news["queued_as"])

    thanks = php_send(
        phpmailer,
        proc,
        to=["paula@prospect.example"],
        subject="Thanks for your time",
        headers={
            "X-Sendguard-Class": "transactional",
            "X-Sendguard-Unless": "meeting:8812:status=no_show",
            "X-Sendguard-Wait": "6h",
            "X-Sendguard-On-Timeout": "forward",
        },
    )
    assert proc.states(thanks["queued_as"]) == {"paula@prospect.example": "delayed"}
    status, fact = proc.call(
        "POST",
        "/v1/facts",
        {"key": "meeting:8812:status", "value": "no_show", "contact": "paula@prospect.example"},
    )
    assert (status, fact["woken"]) == (202, 1)
    proc.wait_states({"paula@prospect.example": "dropped"}, thanks["queued_as"], timeout=5)
    assert [r.rcpt_tos for r in sink.received] == [["Ann@Example.org"], ["bob@example.org"]]
