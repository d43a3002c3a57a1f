"""The pinned dependencies (constraints.txt, [tool.uv] constraint-dependencies) are complete,
name no host, agree with each other and with what is installed."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run scripts/pin-dependencies (see README, 'Pinned dependencies')"


def _pins_txt() -> list[str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def _pins_pyproject() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"][
        "constraint-dependencies"
    ]


def _applicable() -> dict[str, str]:
    """Pinned version of each package whose marker holds on this interpreter."""
    pins: dict[str, str] = {}
    for line in _pins_txt():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_pins_are_plain_and_name_no_host():
    pins = _pins_txt()
    assert len(pins) > 50
    for line in pins:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;]+( ; .+)?", line), line
        assert "://" not in line and "index" not in line.lower()
    text = (ROOT / "constraints.txt").read_text() + (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"https?://|pypi\.org|files\.pythonhosted", text)


def test_pyproject_constraints_equal_constraints_txt():
    assert _pins_pyproject() == _pins_txt(), f"the two pin lists differ: {REGENERATE}"


def test_every_installed_dependency_is_pinned_at_its_version():
    """Walk the installed dependency closure of kerastrain and its bundled plugins: every
    package in it is pinned, at the version installed (so a new dependency without new pins, or
    an install that ignored the pins, fails here)."""
    pins = _applicable()
    plugins = [p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists()]
    roots = ["kerastrain", *plugins]
    workspace = {canonicalize_name(r) for r in roots}
    seen: set[str] = set()
    todo = [(r, frozenset({"all"})) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed here (another platform's, or overridden away)
        if key in seen:
            continue
        seen.add(key)
        if key not in workspace:
            assert key in pins, f"{name} is installed but not pinned: {REGENERATE}"
            assert dist.version == pins[key], (
                f"{name} {dist.version} installed, {pins[key]} pinned: reinstall with uv sync "
                f"or {REGENERATE}"
            )
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(Marker(str(req.marker)).evaluate(e) for e in envs):
                todo.append((req.name, frozenset(req.extras)))
    assert len(seen) > 30
