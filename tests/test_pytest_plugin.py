"""kerastrain's pytest plugin reaches a separate distribution's tests through ``pytest11``: the toy
distribution in ``tests/toy_pytest_plugin`` is copied out of this repository (away from our
conftest) and its own tests run there (named check_*.py so that our suite does not collect them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TOY = Path(__file__).parent / "toy_pytest_plugin"


def test_fixtures_work_in_a_separate_distribution_with_no_conftest(tmp_path):
    project = tmp_path / "kerastrain-lines"
    shutil.copytree(TOY, project)
    assert not list(project.rglob("conftest.py"))
    (project / "pytest.ini").write_text("[pytest]\n")  # its own rootdir, not ours
    env = {**os.environ, "PYTHONPATH": str(project), "KERASTRAIN_LOAD_PLUGINS": "lines"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "toy_tests/check_lines_plugin.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout
