"""A mixture declared by repeated --dataset-id, by --dataset entries or [[dataset]] tables: the
same datasets either way, kept whole by run_config.json, and bad declarations are one line."""

from __future__ import annotations

import json

import pytest

from kerastrain.config import RunConfig
from kerastrain.mixture_config import datasets_of
from tests.cli.test_config_file import _configured

TABLES = """\
max_steps = 10

[[dataset]]
id = "s3://corpus/web/*.parquet"
weight = 0.7
text_column = "content"

[[dataset]]
id = "data/chat.jsonl"
format = "chat"
name = "chat"
weight = 0.3
"""


def test_repeated_dataset_ids_take_the_weights_in_order():
    config, result = _configured("--dataset-id", "s3://corpus/web/*.parquet", "--dataset-id",
                                 "data/code.jsonl", "--mixture-weights", "0.7,0.3",
                                 "--text-column", "content")
    assert result.exit_code == 0, result.output
    specs = datasets_of(config.data)
    assert [(s.dataset_id, s.name, s.weight) for s in specs] == [
        ("s3://corpus/web/*.parquet", "web", 0.7), ("data/code.jsonl", "code", 0.3)]
    # Each dataset is read with the run's data options (here the text column).
    assert [s.data_config(config.data).text_column for s in specs] == ["content", "content"]
    assert specs[1].data_config(config.data).dataset_id == ["data/code.jsonl"]


def test_dataset_tables_in_a_file_equal_dataset_entries_on_the_command_line(tmp_path):
    path = tmp_path / "mix.toml"
    path.write_text(TABLES)
    from_file, result = _configured("--config", str(path))
    assert result.exit_code == 0, result.output
    from_flags, result = _configured(
        "--max-steps", "10", "--dataset", "id=s3://corpus/web/*.parquet,weight=0.7,"
        "text_column=content", "--dataset",
        json.dumps({"id": "data/chat.jsonl", "format": "chat", "name": "chat", "weight": 0.3}))
    assert result.exit_code == 0, result.output
    assert datasets_of(from_file.data) == datasets_of(from_flags.data)
    web, chat = datasets_of(from_file.data)
    assert web.data_config(from_file.data).text_column == "content"
    assert chat.data_config(from_file.data).data_format == "chat"
    assert chat.data_config(from_file.data).text_column == "text"  # the run's, not web's


def test_run_config_json_keeps_the_mixture_and_an_older_single_id_still_reads(tmp_path):
    path = tmp_path / "mix.toml"
    path.write_text(TABLES)
    config, _ = _configured("--config", str(path), "--mixture-exhausted", "restart")
    saved = tmp_path / "run_config.json"
    config.save(saved)
    again, result = _configured("--config", str(saved))
    assert result.exit_code == 0, result.output
    assert again.data == config.data and again.data.mixture_exhausted == "restart"
    assert RunConfig.from_dict(json.loads(saved.read_text())).data == config.data
    old = json.loads(saved.read_text())
    old["data"].update(dataset_id="roneneldan/TinyStories", datasets=None, mixture_weights=None)
    assert RunConfig.from_dict(old).data.dataset_id == ["roneneldan/TinyStories"]


@pytest.mark.parametrize("args,message", [
    (["--dataset-id", "a", "--dataset-id", "b", "--mixture-weights", "1,2,3"],
     "gives 3 weight(s) for 2 --dataset-id"),
    (["--dataset-id", "a", "--dataset", "id=b"], "not both"),
    (["--dataset", "id=a,colour=red"], "unknown key 'colour'"),
    (["--dataset", "weight=2"], "has no id"),
    (["--dataset-id", "a", "--dataset-id", "b", "--mixture-weights", "1,0"], "must be positive"),
    (["--mixture-weights", "0.7,x"], "give numbers"),
])
def test_bad_mixtures_are_one_line_errors_before_anything_runs(tmp_path, args, message):
    from tests.helpers import invoke

    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_dataset_tables_sit_beside_the_data_section_table(tmp_path):
    path = tmp_path / "mix.toml"
    path.write_text(TABLES.replace("max_steps = 10\n", "max_steps = 10\n\n[data]\nsplit = \"train\"\n"))
    config, result = _configured("--config", str(path))
    assert result.exit_code == 0, result.output
    assert [s.name for s in datasets_of(config.data)] == ["web", "chat"]
