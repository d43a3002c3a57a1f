"""``kerastrain plugins new NAME`` writes a plugin project whose tests pass as generated, once it
is installed (here with ``uv pip install --target``, loaded through its entry point)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[2]


def test_bad_name_and_existing_folder_are_one_line_errors(tmp_path):
    bad = invoke("plugins", "new", "My-Plugin", "--dir", str(tmp_path))
    assert bad.exit_code == 2 and "use lowercase letters and digits" in bad.output
    assert invoke("plugins", "new", "demo", "--dir", str(tmp_path)).exit_code == 0
    again = invoke("plugins", "new", "demo", "--dir", str(tmp_path))
    assert again.exit_code == 2 and "exists already" in again.output


def test_the_guide_shows_the_generated_files_verbatim(tmp_path):
    root = Path(invoke("plugins", "new", "lines", "--dir", str(tmp_path)).output.split()[1]
                .rstrip("."))
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in (".py", ".toml"):
            assert path.read_text().strip() in guide, f"docs/plugins.md lacks {path.name} as generated"


@pytest.mark.slow
def test_generated_plugin_installs_and_its_tests_pass(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    result = invoke("plugins", "new", "demo", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    project = tmp_path / "kerastrain-demo"
    site = tmp_path / "site"
    # A real install of the generated project (its wheel, entry point and all), kept out of our
    # environment: --target a folder, then PYTHONPATH.
    done = subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(project)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (site / "kerastrain_demo").is_dir()
    shutil.rmtree(project / "kerastrain_demo")  # its tests must use the installed copy
    env = {**os.environ, "PYTHONPATH": str(site), "KERASTRAIN_LOAD_PLUGINS": "demo"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b8 passed\b", proc.stdout), proc.stdout[-2000:]
