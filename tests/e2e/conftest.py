"""Fixtures the end-to-end modules share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.test_esp_node_sdks import NODE, ROOT, SDKS


@pytest.fixture(scope="module")
def nodemailer_script() -> Path:
    """tests/node/smtp.mjs beside the nodemailer `make node-sdks` installed (skips without)."""
    if NODE is None or not (SDKS / "node_modules" / "nodemailer").is_dir():
        pytest.skip(f"nodemailer is not installed in {SDKS}; run `make node-sdks`")
    target = SDKS / "smtp.mjs"
    shutil.copyfile(ROOT / "tests" / "node" / "smtp.mjs", target)
    return target
