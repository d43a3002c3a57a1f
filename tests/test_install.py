"""No standard install path brings TensorFlow: core, a bundled plugin and a third-party plugin go
into a fresh virtual environment (uv outside the workspace, and plain pip) without it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "tests" / "toy_pytest_plugin"
FORBIDDEN = {"tensorflow", "tensorflow-text", "tensorflow-cpu", "tf-keras", "tensorflow-io"}


def _run(*args, cwd: Path, timeout: float = 900) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _third_party_project(tmp_path: Path) -> Path:
    """The toy plugin as a real project (pyproject, entry point), as a plugin author has it."""
    project = tmp_path / "kerastrain-lines"
    shutil.copytree(TOY / "kerastrain_lines", project / "kerastrain_lines")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "kerastrain-lines"\nversion = "0.1.0"\n'
        'dependencies = ["kerastrain"]\n\n'
        '[project.entry-points.kerastrain]\nlines = "kerastrain_lines"\n\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
    )
    return project


def _names(listing: str) -> set[str]:
    return {item["name"].lower().replace("_", "-") for item in json.loads(listing)}


@pytest.mark.slow
def test_uv_outside_the_workspace_installs_core_and_plugins_without_tensorflow(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    venv = tmp_path / "venv"
    _run(uv, "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    third = _third_party_project(tmp_path)
    # From tmp_path, not the checkout: the workspace's override of tensorflow-text does not apply.
    _run(uv, "pip", "install", "-q", "--python", python, ROOT, ROOT / "plugins" / "kerastrain-s3",
         third, cwd=tmp_path)
    installed = _names(_run(uv, "pip", "list", "--format", "json", "--python", python,
                            cwd=tmp_path))
    assert {"kerastrain", "kerastrain-s3", "kerastrain-lines", "keras", "jax", "boto3"} <= installed
    assert not installed & FORBIDDEN, sorted(installed & FORBIDDEN)
    assert "keras-hub" not in installed  # an extra: kerastrain[hub]
    rows = json.loads(_run(python, "-m", "kerastrain", "plugins", "--json", cwd=tmp_path))
    registers = {r for row in rows for r in row["registers"]}
    assert {"storage:s3", "data source:lines", "preset:nano"} <= registers
    # Every bundled plugin too (resolved, not installed: the data plugins are large).
    plugins = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
    proc = subprocess.run([uv, "pip", "install", "--dry-run", "--python", str(python), str(ROOT),
                           *map(str, plugins)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    would = {line.split()[1].split("==")[0] for line in proc.stderr.splitlines()
             if line.startswith(" + ")}
    assert {"kerastrain-tfds", "kerastrain-hf", "tensorflow-datasets"} <= would
    assert not would & FORBIDDEN, sorted(would & FORBIDDEN)


@pytest.mark.slow
def test_plain_pip_resolves_core_and_a_plugin_without_tensorflow(tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    report = tmp_path / "report.json"
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--dry-run", "--report", report,
         ROOT, ROOT / "plugins" / "kerastrain-s3", _third_party_project(tmp_path), cwd=tmp_path)
    would = {item["metadata"]["name"].lower().replace("_", "-")
             for item in json.loads(report.read_text())["install"]}
    assert {"kerastrain", "kerastrain-s3", "kerastrain-lines", "keras", "jax"} <= would
    assert not would & FORBIDDEN, sorted(would & FORBIDDEN)
