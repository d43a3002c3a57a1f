"""A tokenizer the data cannot fill to --vocab-size is used at the size it reached."""

from __future__ import annotations

import json

from tests.helpers import TINY, invoke, kill_9_at_step

SMALL = [a if a != "bytes" else "bpe" for a in TINY]


def _corpus(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("".join(f"the cat sat on mat number {i % 7}.\n" for i in range(60)))
    return str(path)


def test_a_small_corpus_trains_at_the_size_it_reaches_and_resumes(tmp_path):
    out, data = tmp_path / "out", _corpus(tmp_path)
    args = ["run", "--output-dir", str(out), "--dataset-id", data, *SMALL, "--vocab-size", "500",
            "--save-every", "2"]
    first = invoke(*args, "--max-steps", "2")
    assert first.exit_code == 0, first.output
    reached = json.loads((out / "model_config.json").read_text())["vocab_size"]
    assert 257 <= reached < 500
    text = first.output.replace("\n", "")
    assert f"the data fills {reached} of the 500 tokens asked" in text
    assert json.loads((out / "tokenizer.json").read_text())  # saved, reused below
    # The same command resumes with the tokenizer it trained: no contradiction.
    resumed = invoke(*args, "--max-steps", "4")
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming from" in resumed.output.replace("\n", "")
    # Only a reused tokenizer contradicting an explicit, different --vocab-size is an error.
    clash = invoke(*[a if a != "500" else "450" for a in args], "--max-steps", "6")
    assert clash.exit_code == 2 and "disagrees with the tokenizer" in clash.output


def test_a_run_killed_before_its_first_checkpoint_resumes_with_the_same_command(tmp_path):
    """The run trains its tokenizer short of --vocab-size, saves it and is killed (kill -9)
    before any checkpoint: the same command recognises the tokenizer as its own (the record
    beside it) and trains to the end; another request is still told of the contradiction."""
    out = tmp_path / "out"
    args = ["--dataset-id", _corpus(tmp_path), *SMALL, "--vocab-size", "400", "--max-steps", "6",
            "--save-every", "1000", "--log-every", "1", "--eval-every", "1000"]
    assert kill_9_at_step(out, args, 1) < 6
    assert not list(out.glob("*checkpoint*")) and (out / "tokenizer.json").exists()
    reached = json.loads((out / "tokenizer.json").read_text())
    again = invoke("run", "--output-dir", str(out), *args)
    assert again.exit_code == 0, again.output
    text = again.output.replace("\n", "")
    assert "Tokenizer: reusing" in text and "Resuming from" not in text
    assert json.loads((out / "tokenizer.json").read_text()) == reached  # the same file, reused
    assert (out / "final_checkpoint").is_dir()
    vocab = json.loads((out / "model_config.json").read_text())["vocab_size"]
    assert 257 <= vocab < 400
    # Another data sample (--max-train-examples) did not train this tokenizer: a contradiction.
    other = [a if a != "200" else "150" for a in args]
    clash = invoke("run", "--output-dir", str(tmp_path / "other"), *other,
                   "--tokenizer-path", str(out / "tokenizer.json"))
    assert clash.exit_code == 2 and "disagrees with the tokenizer" in clash.output
