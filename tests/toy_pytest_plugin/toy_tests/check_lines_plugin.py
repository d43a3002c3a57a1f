"""The toy plugin's own tests: kerastrain's fixtures arrive through the pytest11 entry point
(this folder has no conftest.py and no pytest_plugins line)."""

import kerastrain_lines
import pytest

from kerastrain.errors import DataError
from kerastrain.hookspecs import hookimpl


def test_output_dir_is_empty(kerastrain_output_dir):
    assert kerastrain_output_dir.is_dir() and not any(kerastrain_output_dir.iterdir())


class Recorder:
    """A test-only plugin: records the checkpoints a run saves."""

    def __init__(self):
        self.saved = []

    @hookimpl
    def on_checkpoint_saved(self, run, path, step, kind):
        self.saved.append((step, kind))


def test_source_trains_a_tiny_model(kerastrain_plugin, kerastrain_run, tmp_path):
    # The installed plugin is loaded through its entry point; a test-only plugin rides along.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line number {i} of the toy corpus\n" for i in range(60)))
    recorder = kerastrain_plugin(Recorder(), name="recorder")
    result = kerastrain_run("--dataset-id", f"lines:{corpus}", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert (result.output_dir / "final_checkpoint" / "manifest.json").exists()
    assert (3, "final") in recorder.saved


def test_recorder_is_gone_after_its_test():
    from kerastrain.plugins import get_plugin_manager

    assert get_plugin_manager().get_plugin("recorder") is None
    assert get_plugin_manager().get_plugin("lines") is kerastrain_lines


def test_missing_file_is_a_data_error(kerastrain_run, tmp_path):
    result = kerastrain_run("--dataset-id", f"lines:{tmp_path / 'nope.txt'}")
    assert result.exit_code == 2 and "no such file" in result.output


def test_source_interface():
    source = kerastrain_lines.LinesSource()
    with pytest.raises(DataError):
        source.open(type("R", (), {"location": "/nonexistent"})())
