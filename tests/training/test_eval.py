"""kerastrain eval: a checkpoint's loss, perplexity and tokens, without training."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import TINY, invoke


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--max-steps", "3",
                    "--eval-every", "3", "--log-every", "1")
    assert result.exit_code == 0, result.output
    return out


def test_eval_without_a_dataset_reproduces_the_runs_validation_loss(trained):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r][-1]
    assert val["step"] == 3
    result = invoke("eval", str(trained), "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output.strip().splitlines()[-1])
    assert scored["split"] == "validation" and scored["dataset"] == "builtin"
    assert scored["loss"] == pytest.approx(val["val_loss"], rel=1e-5)
    assert scored["tokens"] == val["val_tokens"]
    assert scored["perplexity"] == pytest.approx(math.exp(scored["loss"]))


def test_eval_on_another_dataset_prints_a_table(trained, tmp_path):
    data = tmp_path / "other.txt"
    data.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n"
                            for i in range(40)))
    result = invoke("eval", str(trained / "final_checkpoint"), "--dataset-id", str(data),
                    "--split", "train", "--max-examples", "20")
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and "train" in result.output
    as_json = invoke("eval", str(trained / "final_checkpoint"), "--dataset-id", str(data),
                     "--split", "train", "--max-examples", "20", "--json")
    scored = json.loads(as_json.output.strip().splitlines()[-1])
    assert scored["tokens"] > 0 and f"{scored['loss']:.4f}" in result.output
    fewer = invoke("eval", str(trained), "--dataset-id", str(data), "--split", "train",
                   "--max-examples", "5", "--json")
    assert json.loads(fewer.output.strip().splitlines()[-1])["tokens"] < scored["tokens"]
    missing = invoke("eval", str(trained), "--dataset-id", str(data))
    assert missing.exit_code == 2 and "validation" in missing.output
