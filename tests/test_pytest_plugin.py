"""kerastrain's pytest plugin reaches a separate distribution's tests through ``pytest11``: the toy
distribution in ``tests/toy_pytest_plugin`` is copied out of this repository (away from our
conftest) and its own tests run there (named check_*.py so that our suite does not collect them).
A project that does not use kerastrain keeps its own Keras backend in a session where kerastrain
(and so its plugin) is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOY = Path(__file__).parent / "toy_pytest_plugin"


def keras_home(tmp_path: Path, backend: str) -> Path:
    """A Keras configuration folder (``KERAS_HOME``) whose ``keras.json`` names ``backend``."""
    home = tmp_path / "keras-home"
    home.mkdir(exist_ok=True)
    (home / "keras.json").write_text(json.dumps({"backend": backend}))
    return home


FOREIGN_TEST = """
import os

import keras


def test_the_session_keeps_its_backend(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("kerastrain")  # kerastrain's plugin is loaded
    assert os.environ.get("KERAS_BACKEND") == {env!r}
    assert keras.backend.backend() == "numpy"
"""


@pytest.mark.parametrize("where", ["keras.json", "environment"])
def test_a_foreign_session_keeps_its_own_keras_backend(tmp_path, where):
    """Another project's tests, in an environment where kerastrain is installed, get the backend
    that project chose (in Keras' configuration file or in KERAS_BACKEND), never JAX by default."""
    project = tmp_path / "other-project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "KERAS_HOME": str(keras_home(tmp_path, "numpy"))}
    env.pop("KERAS_BACKEND", None)
    if where == "environment":
        env["KERAS_BACKEND"] = "numpy"
    expected = env.get("KERAS_BACKEND")
    (project / "test_backend.py").write_text(FOREIGN_TEST.format(env=expected))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


def test_fixtures_work_in_a_separate_distribution_with_no_conftest(tmp_path):
    project = tmp_path / "kerastrain-lines"
    shutil.copytree(TOY, project)
    assert not list(project.rglob("conftest.py"))
    (project / "pytest.ini").write_text("[pytest]\n")  # its own rootdir, not ours
    # No backend in the environment and Keras' own configuration naming another: the runs of
    # kerastrain_run train on JAX because kerastrain selects it where it imports Keras.
    env = {**os.environ, "PYTHONPATH": str(project), "KERASTRAIN_LOAD_PLUGINS": "lines",
           "KERAS_HOME": str(keras_home(tmp_path, "numpy"))}
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "toy_tests/check_lines_plugin.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout
