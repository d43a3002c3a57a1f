"""Pytest fixtures for kerastrain and for plugin authors (a pytest plugin).

Installing kerastrain registers this module with pytest through the ``pytest11`` entry point, so
these fixtures work in any project's tests with no conftest and no ``pytest_plugins`` line:

``kerastrain_plugin``
    ``kerastrain_plugin(plugin, name=None)`` registers a plugin object (a module, class or
    instance with ``@hookimpl`` functions) for one test and unregisters it afterwards, even when
    the test fails. A misspelt hook raises :class:`kerastrain.errors.PluginError` at once.
``kerastrain_output_dir``
    A fresh, empty output directory (a ``pathlib.Path``) for one test.
``kerastrain_run``
    ``kerastrain_run(*args)`` runs ``kerastrain run`` in this process with a tiny model (2 layers,
    width 32, byte tokenizer, 4 steps unless ``--max-steps`` is given) writing to
    ``kerastrain_output_dir``, and returns a :class:`RunResult`. Plugins registered with
    ``kerastrain_plugin`` take part, so a data source or storage backend is tested end to end::

        def test_my_source_trains(kerastrain_plugin, kerastrain_run):
            kerastrain_plugin(MySourcePlugin(), name="my-source")
            result = kerastrain_run("--dataset-id", "mine:sample")
            assert result.exit_code == 0, result.output
            assert (result.output_dir / "final_checkpoint" / "manifest.json").exists()

Loading this plugin sets nothing in the session: a project that uses none of these fixtures keeps its
own Keras backend; kerastrain selects JAX when a fixture reaches its model or training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# A model small enough that a real training step takes milliseconds on a laptop CPU.
TINY_RUN_ARGS = (
    "--tokenizer", "bytes", "--d-model", "32", "--num-layers", "2", "--num-heads", "2",
    "--d-ff", "64", "--seq-len", "32", "--batch-size", "4", "--warmup-steps", "1",
    "--max-train-examples", "50", "--max-val-examples", "5", "--log-every", "1",
)  # fmt: skip


@dataclass
class RunResult:
    """What ``kerastrain_run`` returns: the exit code, everything printed, the output directory."""

    exit_code: int
    output: str
    output_dir: Path
    exception: BaseException | None = None


def pytest_configure(config) -> None:
    # Keras' JAX variables warn under NumPy 2 whenever converted with np.asarray; not the
    # plugin author's to fix.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    )


@pytest.fixture
def kerastrain_plugin():
    from kerastrain.plugins import get_plugin_manager
    from kerastrain.validation import register_checked

    pm = get_plugin_manager()
    added = []

    def register(plugin, name: str | None = None):
        added.append(register_checked(pm, plugin, name=name))  # a misspelt hook: PluginError
        return plugin

    try:
        yield register
    finally:
        for name in added:
            pm.unregister(name=name)


@pytest.fixture
def kerastrain_output_dir(tmp_path) -> Path:
    path = tmp_path / "kerastrain-output"
    path.mkdir()
    return path


@pytest.fixture
def kerastrain_run(kerastrain_output_dir):
    from click.testing import CliRunner

    from kerastrain.cli import cli

    def run(*args: str) -> RunResult:
        args = tuple(str(a) for a in args)
        steps = () if "--max-steps" in args else ("--max-steps", "4")
        full = ["run", "--output-dir", str(kerastrain_output_dir), *TINY_RUN_ARGS, *steps, *args]
        result = CliRunner().invoke(cli, full)
        error = result.exception if not isinstance(result.exception, SystemExit) else None
        return RunResult(result.exit_code, result.output, kerastrain_output_dir, error)

    return run


def invoke(*args: str, input: str | None = None):
    """``kerastrain ARGS`` run in this process by click's test runner (``input``: what stdin
    reads); an exception propagates. For a plugin's tests, as for kerastrain's own."""
    from click.testing import CliRunner

    from kerastrain.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def run_command(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """``python -m kerastrain ARGS`` in a subprocess (``env`` added to this one's); returns the
    ``subprocess.CompletedProcess`` with its output as text."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "kerastrain", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)
