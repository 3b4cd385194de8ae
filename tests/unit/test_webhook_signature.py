"""The webhook signature and docs/webhooks.md's Python check agree."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sendguard.webhooks import sign, verify_signature

ROOT = Path(__file__).resolve().parents[2]


def test_signature_round_trip_and_tampering() -> None:
    header = sign("s" * 16, 1_700_000_000, b'{"id":"evt_1"}')
    assert verify_signature("s" * 16, header, b'{"id":"evt_1"}', 1_700_000_010)
    assert not verify_signature("t" * 16, header, b'{"id":"evt_1"}', 1_700_000_010)
    assert not verify_signature("s" * 16, header, b'{"id":"evt_2"}', 1_700_000_010)
    assert not verify_signature("s" * 16, header, b'{"id":"evt_1"}', 1_700_000_400)  # replay
    assert not verify_signature("s" * 16, "garbage", b"", 1_700_000_000)


def test_the_documented_python_check_accepts_our_signature() -> None:
    docs = (ROOT / "docs" / "webhooks.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", docs, re.DOTALL)
    scope: dict[str, Any] = {}
    exec(code, scope)
    body = b'{"id":"evt_7","type":"held"}'
    header = sign("a-secret-of-16-chars", int(time.time()), body)
    assert scope["verify"]("a-secret-of-16-chars", header, body)
    assert not scope["verify"]("a-wrong-secret-16-chars", header, body)
