"""The plugin contract's modules say what they export: `__all__` lists exactly the public names
each defines (like httpx's tests/test_exported_members.py), so nothing leaks in or goes missing
unnoticed."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PUBLIC_MODULES = [
    "sendguard.policy",
    "sendguard.verdict",
    "sendguard.message",
    "sendguard.testing",
    "sendguard.errors",
    "sendguard.phrasing",
    "sendguard.duration",
]


def defined_public_names(module_name: str) -> set[str]:
    """Names a module binds at its top level (classes, functions, constants), not imports."""
    source = Path(importlib.import_module(module_name).__file__ or "").read_text()
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_lists_exactly_the_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ repeats a name"
    assert set(exported) == defined_public_names(module_name), (
        f"{module_name}.__all__ and its public names differ: make new names private (_name) "
        "or export them"
    )
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which does not exist"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_class_and_function_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    undocumented = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name in module.__all__
        and not ast.get_docstring(node)
    ]
    assert undocumented == [], f"{module_name}: no docstring on {undocumented}"
