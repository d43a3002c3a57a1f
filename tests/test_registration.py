"""Registration validates what a plugin registers: preset keys and shapes, hook names, backend
classes; ``kerastrain plugins`` still lists everything when plugins conflict, marking it."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from kerastrain.errors import PluginError
from kerastrain.hookspecs import hookimpl
from kerastrain.plugins import plugin_report, presets, storage_backends
from kerastrain.storage.backends import LocalStorage
from tests.helpers import kerastrain


def _preset_plugin(name: str, fields: dict):
    class Plugin:
        @hookimpl
        def register_presets(self, register):
            register(name, fields, description="test preset")

    return Plugin()


def test_misspelt_preset_key_names_the_closest_key_and_the_plugin(kerastrain_plugin):
    kerastrain_plugin(_preset_plugin("mine", {"d_modle": 64, "layers": 2}), name="my-presets")
    with pytest.raises(PluginError) as err:
        presets()
    message = err.value.format_message()
    assert "'my-presets'" in message and "'d_modle'" in message
    assert "did you mean 'd_model'?" in message and "\n" not in message


def test_plural_key_suggests_the_short_alias(kerastrain_plugin):
    kerastrain_plugin(_preset_plugin("mine", {"layer": 2}), name="my-presets")
    with pytest.raises(PluginError, match=r"unknown key 'layer' \(did you mean 'layers'\?\)"):
        presets()


def test_preset_that_cannot_build_is_refused_in_preset_terms(kerastrain_plugin):
    kerastrain_plugin(_preset_plugin("odd", {"d_model": 64, "heads": 5}), name="odd-presets")
    with pytest.raises(PluginError) as err:
        presets()
    message = err.value.format_message()
    assert message.startswith("preset 'odd' of plugin 'odd-presets' cannot build: ")
    assert "d_model 64 is not divisible by heads 5" in message
    assert "--" not in message  # names no flag the user never passed


def test_valid_plugin_preset_is_registered_with_long_fields(kerastrain_plugin):
    kerastrain_plugin(_preset_plugin("mine", {"d_model": 64, "heads": 4, "layers": 2}),
                      name="my-presets")
    found = presets()
    assert found["mine"].plugin == "my-presets"
    assert found["mine"].obj == {"d_model": 64, "heads": 4, "layers": 2}


def test_misspelt_hook_is_one_line_naming_plugin_and_closest_hook(kerastrain_plugin):
    class Misspelt:
        @hookimpl
        def register_preset(self, register):
            pass

    with pytest.raises(PluginError) as err:
        kerastrain_plugin(Misspelt(), name="typo-plugin")
    assert err.value.format_message() == (
        "plugin 'typo-plugin' implements 'register_preset', which is not a kerastrain hook "
        "(did you mean 'register_presets'?)"
    )
    from kerastrain.plugins import get_plugin_manager

    assert get_plugin_manager().get_plugin("typo-plugin") is None  # refused, not half-registered


def test_backend_class_missing_a_method_is_refused(kerastrain_plugin):
    class HalfBackend:
        scheme = "half"

        @classmethod
        def from_config(cls, bucket, options=None, *, part_size=None):
            return cls()

        def upload_file(self, local, key):
            pass

    class Plugin:
        @hookimpl
        def register_storage_backends(self, register):
            register(HalfBackend)

    kerastrain_plugin(Plugin(), name="half-storage")
    with pytest.raises(PluginError) as err:
        storage_backends()
    assert err.value.format_message() == (
        "storage backend HalfBackend of plugin 'half-storage' lacks download_file, list_keys, "
        "exists, delete (see docs/plugins.md for the interface)"
    )


def test_report_lists_everything_and_marks_a_conflict(kerastrain_plugin):
    class SecondFile(LocalStorage):
        pass

    class Plugin:
        @hookimpl
        def register_storage_backends(self, register):
            register(SecondFile)

    kerastrain_plugin(Plugin(), name="second-file")
    with pytest.raises(PluginError, match="registered by both"):
        storage_backends()
    rows = {row["name"]: row for row in plugin_report()}
    assert "storage:file" in rows["kerastrain.storage.backends"]["registers"]
    assert any("registered by both" in p for p in rows["second-file"]["problems"])
    assert "sync" in rows["kerastrain.cli.storage_commands"]["commands"]


def _write_dist(root: Path, name: str, source: str) -> Path:
    """A separate distribution on ``root`` (package + dist-info with its entry point)."""
    package = name.replace("-", "_")
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(textwrap.dedent(source))
    info = root / f"{package}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[kerastrain]\n{name} = {package}\n")
    return root


def _env(root: Path) -> dict:
    return {"PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_cli_misspelt_hook_is_one_line_not_a_traceback(tmp_path):
    root = _write_dist(tmp_path, "kerastrain-typo", """
        from kerastrain.hookspecs import hookimpl

        @hookimpl
        def register_preset(register):
            pass
    """)
    proc = kerastrain("plugins", env=_env(root), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: plugin 'kerastrain-typo' implements 'register_preset', which is not a kerastrain "
        "hook (did you mean 'register_presets'?)"
    )


def test_cli_plugins_json_lists_commands_and_marks_conflicting_presets(tmp_path):
    root = _write_dist(tmp_path, "kerastrain-clash", """
        import click

        from kerastrain.hookspecs import hookimpl

        @hookimpl
        def register_presets(register):
            register("nano", {"layers": 2, "d_model": 64, "heads": 4})

        @hookimpl
        def register_commands(cli):
            @cli.command(name="clash-hello")
            def hello():
                click.echo("hello")
    """)
    proc = kerastrain("plugins", "--json", env=_env(root), timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    clash = rows["kerastrain-clash"]
    assert clash["commands"] == ["clash-hello"] and clash["distribution"] == "kerastrain-clash"
    assert "preset:nano" in rows["kerastrain.model.presets"]["registers"]
    assert clash["problems"] and "'nano' is registered by both" in clash["problems"][0]
    table = kerastrain("plugins", env={**_env(root), "COLUMNS": "250"}, timeout=60)
    assert table.returncode == 0 and "CONFLICT" in table.stdout and "kerastrain-clash" in table.stdout
