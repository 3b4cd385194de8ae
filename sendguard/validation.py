"""Pydantic at the edges: the strict base of every config and request model, and one way to
turn a ValidationError into problems that name the field (`policies[2].options.window`,
`requires[0]`), shared by `check-config` and the HTTP API's 400 answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError


def any_case(word: str) -> str:
    """`word` as a regular expression matching it in any case (JSON-schema patterns, ECMA
    regexes, have no case-insensitive flag)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


class Strict(BaseModel):
    """Base of every config and request model: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """`a.b[2].c` from a pydantic location, after `prefix` (like `[3]` for a batch item)."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class Problem:
    """One validation error: where (the pydantic location), what kind, and what to tell."""

    loc: tuple[int | str, ...]
    kind: str
    message: str


def problems(
    exc: ValidationError, allowed: Sequence[str] | None = None, *, noun: Literal["key", "field"]
) -> list[Problem]:
    """Every error of `exc` worded for people; an unknown `noun` lists `allowed` when known."""
    out = []
    for err in exc.errors(include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown {noun}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            message = f"required {noun} is missing"
        out.append(Problem(tuple(err["loc"]), err["type"], message))
    return out


def allowed_names(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts, as written (aliases), sorted."""
    return sorted(f.alias or name for name, f in model.model_fields.items())
