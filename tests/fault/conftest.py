"""The fault suite: short forms run with `make test`; `make soak` sets SENDGUARD_SOAK=1 for
the long forms and SENDGUARD_FIGURES to a file that collects what each run measured."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SOAK = os.environ.get("SENDGUARD_SOAK") == "1"


def soak(short: Any, long: Any) -> Any:
    """The short form's value, or the soak's under `make soak`."""
    return long if SOAK else short


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`figures(**measured)`: print them, and append them to $SENDGUARD_FIGURES as JSON."""

    def record(**measured: Any) -> None:
        line = json.dumps({"test": request.node.name, "soak": SOAK, **measured})
        print(line)
        target = os.environ.get("SENDGUARD_FIGURES")
        if target:
            with Path(target).open("a") as out:
                out.write(line + "\n")

    return record
