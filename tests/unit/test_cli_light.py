"""`sendguard --version`, `--help` and the client commands without --config start without
loading the config models, the engine or the store (1.4 s before, 0.17 s after)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sendguard.config", "sendguard.app", "sendguard.simulate", "pydantic", "structlog")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


def test_parsing_every_command_loads_nothing_heavy() -> None:
    loaded = modules_after(
        "from sendguard.cli import _parser\n"
        "_parser().parse_args(['simulate', '--config', 'c.yaml', '--json'])\n"
        "_parser().parse_args(['review', 'list', '--url', 'http://x'])"
    )
    assert not {name for name in loaded if name.startswith(HEAVY)}


def test_version_answers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sendguard", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("sendguard ")


def test_the_timeline_suppression_line_loads_nothing_heavy() -> None:
    loaded = modules_after(
        "from sendguard.cli import _suppression_effect\n"
        "_suppression_effect({'dropped_classes': [], 'honoured_by': "
        "[{'policy': 'fatigue', 'mode': 'shadow', 'drops': ['marketing']}]})"
    )
    assert not {name for name in loaded if name.startswith(HEAVY)}
