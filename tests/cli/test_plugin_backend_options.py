"""A third-party storage backend receives ``--cloud-option`` settings, is probed before training,
and its URLs work with ``--resume-from``; a resumed run says where it resumed and what it ran."""

from __future__ import annotations

from pathlib import Path

from kerastrain.errors import StorageError
from kerastrain.hookspecs import hookimpl
from kerastrain.storage import LocalStorage
from tests.helpers import invoke


class OptionsStorage(LocalStorage):
    """A folder as a bucket, found through ``--cloud-option root=PATH``."""

    scheme = "optstore"
    seen: list[dict] = []

    @classmethod
    def from_config(cls, bucket, options=None, *, part_size=None):
        settings = dict(getattr(options, "backend_options", None) or {})
        cls.seen.append(dict(settings))
        root = settings.pop("root", None)
        if root is None:
            raise StorageError("optstore needs --cloud-option root=PATH")
        if settings:
            raise StorageError(f"unknown optstore option(s): {', '.join(sorted(settings))}")
        return cls(Path(root) / bucket)


class OptionsStoragePlugin:
    @hookimpl
    def register_storage_backends(self, register):
        register(OptionsStorage)


def test_unknown_backend_option_is_refused_before_training(kerastrain_plugin, kerastrain_run,
                                                           tmp_path):
    kerastrain_plugin(OptionsStoragePlugin(), name="optstore")
    result = kerastrain_run("--cloud-provider", "optstore", "--cloud-bucket", "b",
                            "--cloud-option", f"root={tmp_path}", "--cloud-option", "color=blue")
    assert result.exit_code == 2, result.output
    assert "unknown optstore option(s): color" in result.output
    assert not (result.output_dir / "metrics.jsonl").exists()


def test_malformed_cloud_option_is_one_line():
    result = invoke("run", "--cloud-option", "novalue", "--max-steps", "1")
    assert result.exit_code == 2 and "--cloud-option 'novalue' is not KEY=VALUE" in result.output


def test_backend_gets_its_options_uploads_and_a_run_resumes_from_its_url(
    kerastrain_plugin, kerastrain_run, tmp_path
):
    kerastrain_plugin(OptionsStoragePlugin(), name="optstore")
    remote = tmp_path / "remote"
    OptionsStorage.seen.clear()
    first = kerastrain_run("--cloud-provider", "optstore", "--cloud-bucket", "b",
                           "--cloud-option", f"root={remote}")
    assert first.exit_code == 0, first.output
    assert OptionsStorage.seen and all(s == {"root": str(remote)} for s in OptionsStorage.seen)
    assert (remote / "b" / "checkpoints" / "final_checkpoint" / "manifest.json").exists()
    assert "Done: 4 steps," in first.output

    url = "optstore://b/checkpoints/final_checkpoint"
    second = kerastrain_run("--max-steps", "6", "--resume-from", url,
                            "--cloud-option", f"root={remote}")
    assert second.exit_code == 0, second.output
    assert f"Resumed from {url} at step 4" in second.output
    assert "Done: 2 steps this run (steps 5-6; 6 in total)" in second.output


def test_resume_from_help_names_plugin_schemes():
    result = invoke("run", "--help")
    text = " ".join(result.output.split())
    assert "any scheme a storage plugin registers" in text and "--cloud-option KEY=VALUE" in text
