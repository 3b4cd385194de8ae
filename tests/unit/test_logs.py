"""Log event names are constants: the values of a line go in its fields, never in its name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def log_calls() -> list[tuple[str, ast.Call]]:
    """Every `log.<level>(...)` call in sendguard/ and plugins/, with where it is."""
    found = []
    for path in sorted(
        [*ROOT.joinpath("sendguard").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
            ):
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


def test_there_are_log_calls_to_check() -> None:
    assert len(log_calls()) > 10


@pytest.mark.parametrize(("where", "call"), log_calls(), ids=[w for w, _ in log_calls()])
def test_event_name_is_a_constant_phrase(where: str, call: ast.Call) -> None:
    assert call.args, f"{where}: the event name is missing"
    name = call.args[0]
    assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
        f"{where}: the event name must be a string literal, not {ast.unparse(name)}"
    )
    assert len(call.args) == 1, f"{where}: values go in keyword fields, not %-arguments"
    assert not set("{}%") & set(name.value), f"{where}: {name.value!r} looks interpolated"
    assert len(name.value) <= 80, f"{where}: {name.value!r} is a sentence, not an event name"
