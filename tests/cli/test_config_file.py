"""kerastrain run --config FILE: TOML, YAML, run_config.json; overrides; unknown keys."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from kerastrain.cli.options import with_run_options
from tests.helpers import TINY, invoke

TOML = """\
preset = "nano"
batch-size = 16
dataset_id = "data/*.txt"

[train]
learning_rate = 1e-3
gradient-accumulation-steps = 2

[output]
output-dir = "from_file"
save_every = 7

[data]
streaming = false

[model]
no-rope = true
"""

YAML = """\
preset: nano
train:
  batch_size: 16
  learning-rate: 0.001
  gradient_accumulation_steps: 2
output:
  output_dir: from_file
  save-every: 7
data:
  dataset-id: data/*.txt
  streaming: false
model:
  use_rope: false
"""


def _configured(*args: str):
    """The RunConfig the run options build from ``args`` (and the exit result)."""
    seen = []

    @click.command()
    @with_run_options
    def show(config):
        seen.append(config)

    result = CliRunner().invoke(show, list(args))
    return (seen[0] if seen else None), result


@pytest.mark.parametrize("name,text", [("run.toml", TOML), ("run.yaml", YAML)])
def test_a_config_file_sets_options_and_the_command_line_overrides_it(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    config, result = _configured("--config", str(path))
    assert result.exit_code == 0, result.output
    assert config.preset == "nano" and config.train.batch_size == 16
    assert config.train.learning_rate == 1e-3 and config.train.gradient_accumulation_steps == 2
    assert config.output.output_dir == "from_file" and config.output.save_every == 7
    assert config.data.dataset_id == ["data/*.txt"] and config.data.streaming is False
    assert config.model.use_rope is False and config.model.num_layers == 4  # nano's
    config, result = _configured("--batch-size", "8", "--config", str(path), "--streaming",
                                 "--d-model", "64", "--num-heads", "2")
    assert result.exit_code == 0, result.output
    assert config.train.batch_size == 8 and config.data.streaming is True
    assert config.model.d_model == 64 and config.train.learning_rate == 1e-3


@pytest.mark.parametrize(
    "text,message",
    [
        ("batch_sise = 3\n", "unknown option 'batch_sise'; did you mean 'batch_size'?"),
        ("[trainig]\nbatch_size = 3\n", "unknown table [trainig]; did you mean [train]?"),
        ("[model]\nbatch_size = 3\n", "'batch_size' belongs in [train]"),
        ("batch_size = 3\nbatch-size = 4\n", "'batch-size' is given twice"),
        ("batch_size = [3\n", "not valid TOML"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = invoke_run_config(path)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def invoke_run_config(path):
    from kerastrain.cli import cli

    return CliRunner().invoke(cli, ["run", "--config", str(path)])


def test_an_unsupported_suffix_and_a_bad_value_are_clear(tmp_path):
    ini = tmp_path / "run.ini"
    ini.write_text("batch_size = 3\n")
    result = invoke_run_config(ini)
    assert result.exit_code == 2 and "use a .toml, .yaml, .yml or .json file" in result.output
    bad = tmp_path / "run.yaml"
    bad.write_text("batch_size: lots\n")
    result = invoke_run_config(bad)
    assert result.exit_code == 2 and "'lots' is not a valid integer" in result.output


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]


def test_run_config_json_reproduces_a_run(tmp_path):
    first = tmp_path / "first"
    result = invoke("run", "--output-dir", str(first), *TINY, "--max-steps", "4",
                    "--log-every", "1", "--dropout-rate", "0.05", "--no-swiglu",
                    "--activation", "relu")
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    result = invoke("run", "--config", str(first / "run_config.json"), "--output-dir", str(again))
    assert result.exit_code == 0, result.output
    assert len(_losses(first)) == 4 and _losses(again) == _losses(first)
    a = json.loads((first / "run_config.json").read_text())
    b = json.loads((again / "run_config.json").read_text())
    a["output"].pop("output_dir"), b["output"].pop("output_dir")
    assert a == b


def test_the_guides_example_config_file_is_valid(tmp_path):
    import re
    from pathlib import Path

    guide = Path(__file__).resolve().parents[2] / "docs" / "guides" / "config-files.md"
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", guide.read_text(), re.S)
                if "tinystories" in b]
    path = tmp_path / "tinystories-nano.toml"
    path.write_text(block)
    config, result = _configured("--config", str(path))
    assert result.exit_code == 0, result.output
    assert config.data.dataset_id == ["roneneldan/TinyStories"] and config.preset == "nano"
    assert config.tokenizer.auto_vocab_size and config.output.trackers == ["mlflow"]
    assert config.output.sample_every == 250 and config.train.batch_size == 64


def test_each_option_has_one_address_in_help_config_files_and_run_config(tmp_path):
    """An option's ``--help`` group, config-file table and run_config.json section are one
    name: a file of every option in its section's table, keyed by its run_config.json field,
    reads back as exactly the values written."""
    from kerastrain.cli.options import parse_run_args
    from kerastrain.plugins import run_options

    config = parse_run_args([])
    tables: dict = {}
    for d in run_options():
        assert click_help_group(d) == (d.section or "model")
        if d.section is None or d.base_type in (list, dict) or d.spec.secret:
            continue
        value = getattr(getattr(config, d.section), d.name)
        if value is not None:
            tables.setdefault(d.section, {})[d.name] = value
    path = tmp_path / "every.json"
    path.write_text(json.dumps(tables))
    again, result = _configured("--config", str(path))
    assert result.exit_code == 0, result.output
    for section, values in tables.items():
        for name, value in values.items():
            assert getattr(getattr(again, section), name) == value, f"{section}.{name}"


def click_help_group(d) -> str:
    from kerastrain.cli.options import click_kwargs

    return click_kwargs(d)["help"].split("]")[0].lstrip("[")
