"""The documentation: the docs site builds with no warning (broken links, anchors and includes are
warnings in mkdocs.yml), and README.md stays a front page whose links resolve and whose test
command is the one CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and mkdocs' toc spell them."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip()).replace("`", "")
        anchors.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower()))
    return anchors


def test_the_docs_site_builds_in_strict_mode(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # benchmarks/README.md reaches the site through docs/benchmarks.md's include.
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "Packing puts 6.1x the trained tokens" in benchmarks
    for page in ("guides/data", "guides/checkpoints", "plugins", "options", "design/decisions"):
        assert (site / page / "index.html").is_file(), page


def test_the_readme_is_a_front_page_of_at_most_15_kb():
    size = len(README.read_bytes())
    assert size <= 15 * 1024, f"README.md is {size} bytes: move detail into docs/"


def test_every_link_in_the_readme_resolves():
    text = README.read_text()
    links = [link for link in LINK.findall(text) if "://" not in link]
    assert len(links) > 10
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        assert target.exists(), f"README.md links to {link}, which does not exist"
        if anchor:
            anchors = _anchors(target.read_text())
            assert anchor in anchors, f"README.md links to #{anchor}, not a heading of {path}"


def test_the_readme_test_command_is_what_ci_runs():
    readme = README.read_text()
    (command,) = [line for line in readme.splitlines() if line.endswith("uv run pytest")]
    ci = [line.replace(" -q ", " ") for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci, f"{command!r} is not a line of .ci/run (pip's -q aside)"
