"""The option schema: one declaration gives the command line, config files, run_config.json and
the reference, and a run's options survive the round trip through run_config.json unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from kerastrain.cli.options import config_from_params, run_option_decorator
from kerastrain.plugins import run_options
from kerastrain.schema import Declared
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[1]


def _other_value(d: Declared):
    """A value of ``d``'s type that is not its default (nor what a preset would give)."""
    base, default = d.base_type, d.default
    if d.param == "preset":
        return "nano"
    if base is bool:
        return not default
    if base is int:
        return (default or 0) + 3
    if base is float:
        return (default or 0.0) + 0.125
    if base is list:  # a list of numbers, of tables ([[dataset]]) or of strings
        return {float: [0.5, 0.25], dict: [{"id": "first", "weight": 2.0}]}.get(
            d.item_type, ["first", "second"])
    if base is dict:
        return {"endpoint": "value", "other": "x=y"}  # (credential keys are redacted)
    if d.spec.choices:
        return next(c for c in d.spec.choices if c != default)
    return f"{d.name}-value"


def _argv(values: dict[str, object]) -> list[str]:
    argv: list[str] = []
    for d in run_options():
        value = values[d.param]
        on, _, off = d.flags[0].partition("/")
        if d.base_type is bool:
            if value:
                argv.append(on)
            elif off:
                argv.append(off)
        elif d.base_type is list:
            for item in value:
                argv += [on, json.dumps(item) if isinstance(item, dict) else str(item)]
        elif d.base_type is dict:
            for k, v in value.items():
                argv += [on, f"{k}={v}"]
        else:
            argv += [on, str(value)]
    return argv


def _parse(argv: list[str]):
    command = run_option_decorator(click.command()(lambda **kw: kw))
    return config_from_params(command.main(argv, standalone_mode=False))


def test_every_option_survives_command_line_to_run_config_json_and_back(tmp_path, monkeypatch):
    for d in run_options():
        if d.spec.envvar:
            monkeypatch.delenv(d.spec.envvar, raising=False)
    values = {d.param: _other_value(d) for d in run_options()}
    config = _parse(_argv(values))
    # Every declared option took the value given on the command line, none its default.
    for d in run_options():
        assert config.value_of(d) == values[d.param] and values[d.param] != d.default, d.param
    path = tmp_path / "run_config.json"
    config.save(path)
    saved = json.loads(path.read_text())
    secrets = [d for d in run_options() if d.spec.secret]
    for d in secrets:  # never written: they come from the command line or the environment again
        assert saved[d.section][d.name] == "<redacted>"
        assert values[d.param] not in path.read_text()
    again = _parse(["--config", str(path), *[a for d in secrets for a in (d.flag, values[d.param])]])
    assert again == config
    assert again.to_dict() == config.to_dict() == saved
    # And the command line still overrides the file.
    assert _parse(["--config", str(path), "--batch-size", "5"]).train.batch_size == 5


def test_every_option_is_in_help_and_in_the_reference():
    from kerastrain.cli.reference import reference_markdown

    help_text = invoke("run", "--help").output
    reference = (ROOT / "docs" / "options.md").read_text()
    assert reference == reference_markdown(), (
        "docs/options.md is out of date: python -m kerastrain.cli.reference > docs/options.md")
    for d in run_options():
        for flag in d.flags[0].split("/"):
            assert flag in help_text, flag
        field = f"{d.section}.{d.name}" if d.section else d.name
        assert f"`{field}`" in reference and f"`{d.flags[0]}`" in reference, field


def test_a_plugin_option_is_a_run_option_and_a_config_key(tmp_path, kerastrain_plugin):
    from kerastrain.hookspecs import hookimpl

    class Options:
        @hookimpl
        def register_run_options(self, register):
            register("colour", section="output", help="A plugin's setting", default="blue")
            register("shade_count", section="train", help="Another", type=int, default=None)

    kerastrain_plugin(Options(), name="options-plugin")
    config = _parse(["--colour", "red", "--shade-count", "4"])
    assert config.output.colour == "red" and config.train.shade_count == 4
    path = tmp_path / "run.toml"
    path.write_text('[output]\ncolour = "green"\n')  # the plugin's section
    assert _parse(["--config", str(path)]).output.colour == "green"
    assert _parse([]).output.colour == "blue"


def test_the_azure_options_are_the_azure_plugin_s():
    from kerastrain.plugins import run_option_declarations

    found = run_option_declarations()
    assert {n: found[n].plugin for n in ("azure_sas_token", "azure_account_name")} == {
        "azure_sas_token": "azure", "azure_account_name": "azure"}
    from kerastrain.config import CloudConfig

    assert "azure_sas_token" not in CloudConfig.__dataclass_fields__
    result = CliRunner().invoke(_command_showing_cloud(), ["--azure-sas-token", "abc"])
    assert result.output.strip() == "abc"


def _command_showing_cloud():
    from kerastrain.cli.options import with_run_options

    @click.command()
    @with_run_options
    def show(config):
        click.echo(config.cloud.azure_sas_token)

    return show
