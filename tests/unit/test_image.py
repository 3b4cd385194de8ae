"""The Docker image's recipe, checked without a Docker daemon: .dockerignore keeps local and
generated files out of the build context (and keeps everything the Dockerfile copies), the
dependencies come pinned from requirements.lock, the healthcheck follows the config, and the
installed package holds every subpackage (a wheel, unlike an editable install, has only those
listed in pyproject.toml)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _segment(part: str) -> str:
    """A regex for one path segment of a .dockerignore pattern (Go's filepath.Match)."""
    out, i = "", 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = part.index("]", i)
            out += "[" + part[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out


def _pattern(line: str) -> re.Pattern[str]:
    parts = line.strip("/").split("/")
    regex = ""
    for index, part in enumerate(parts):
        if part == "**":
            regex += "(?:[^/]+/)*"
        else:
            regex += _segment(part) + ("/" if index < len(parts) - 1 else "")
    return re.compile(regex + r"\Z")


def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!"))))
    return rules


def excluded(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (a pattern matching a directory
    leaves out what is in it; the last matching pattern decides)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, regex in _rules():
        if any(regex.match(p) for p in prefixes):
            verdict = not negated
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "var/sendguard.db",
        "var/outbox/0001.eml",
        "var/api-token",
        "build/lib/sendguard/cli.py",
        "build/lock-venv/bin/pip",
        ".git/HEAD",
        ".mypy_cache/3.11/sendguard/cli.data.json",
        ".ruff_cache/0.5.0/123",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/abc",
        "sendguard/__pycache__/cli.cpython-311.pyc",
        "sendguard.egg-info/PKG-INFO",
        "tests/plugin_pkg/build/lib/sendguard_example_policy/__init__.py",
        "tests/plugin_pkg/sendguard_example_policy.egg-info/PKG-INFO",
        "tests/e2e/test_metrics.py",
    ],
)
def test_dockerignore_leaves_out_local_and_generated_files(path: str) -> None:
    assert excluded(path), path


def _copied_sources() -> list[str]:
    sources = []
    for line in DOCKERFILE.splitlines():
        if not line.startswith("COPY "):
            continue
        words = [w for w in line.split()[1:] if not w.startswith("--")]
        sources += words[:-1]
    return sources


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    sources = _copied_sources()
    assert {"requirements.lock", "pyproject.toml", "sendguard", "plugins", "config"} <= set(sources)
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        assert files, source
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in file.parts:
                continue
            assert not excluded(relative), relative


def test_dependencies_come_from_the_lock_before_the_source() -> None:
    lock_install = DOCKERFILE.index("pip install -r requirements.lock")
    assert DOCKERFILE.index("COPY requirements.lock") < lock_install
    assert lock_install < DOCKERFILE.index("COPY sendguard")
    assert "pip install --no-deps ." in DOCKERFILE
    assert "pip check" in DOCKERFILE
    assert re.search(r"^FROM python:3\.11[-.\w]*$", DOCKERFILE, re.MULTILINE)


IMAGE_PLATFORM = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "python_version": "3.11",
    "implementation_name": "cpython",
}
"""The environment markers of python:3.11-slim, where the lock is installed."""


def _lock() -> dict[str, Version]:
    pinned = {}
    for raw in (ROOT / "requirements.lock").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line)
        assert match, f"requirements.lock: {line!r} is not name==version"
        pinned[canonicalize_name(match[1])] = Version(match[2])
    return pinned


def test_the_lock_pins_every_runtime_dependency_within_its_bounds() -> None:
    pinned = _lock()
    for spec in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(spec)
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE_PLATFORM):
            continue  # not installed in the image (e.g. Windows-only)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements.lock (run make lock)"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {name}=={pinned[name]}, pyproject.toml wants {spec}"
        )
    test_tools = {
        canonicalize_name(Requirement(s).name)
        for s in PYPROJECT["project"]["optional-dependencies"]["test"]
    }
    runtime = {canonicalize_name(Requirement(s).name) for s in PYPROJECT["project"]["dependencies"]}
    assert not (test_tools - runtime) & set(pinned), "test tools do not belong in the image"
    assert "sendguard" not in pinned


def test_the_healthcheck_reads_the_config_the_server_runs() -> None:
    instructions = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    health = next(line for line in instructions.splitlines() if line.startswith("HEALTHCHECK"))
    serve = next(line for line in instructions.splitlines() if line.startswith("CMD"))
    config = re.search(r'"--config", "([^"]+)"', serve)
    assert config is not None
    assert '"sendguard", "healthcheck", "--config", "' + config[1] + '"' in health
    assert not re.search(r"\b8025\b", health), "the port must come from the config"


def test_every_package_is_in_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "sendguard").rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
