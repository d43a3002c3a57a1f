"""``kerastrain run`` on chat data: the format is picked from the columns, only assistant turns
are trained, and bad input is one line with nothing written (kill -9 resume:
test_kill_9_resume.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TINY, invoke
from tests.training.test_training import _metrics


def _chat_file(path: Path, n: int = 120) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i % 7}?"},
                          {"role": "assistant", "content": f"{i + i % 7}."},
                          {"role": "user", "content": "Thanks" + "!" * (i % 3)},
                          {"role": "assistant", "content": "You are welcome."}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _refused(tmp_path, *args) -> str:
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--max-steps", "2", *args)
    assert result.exit_code == 2, result.output
    assert not out.exists() or not any(out.iterdir())  # nothing written
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_bad_chat_input_is_one_line_and_nothing_is_written(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    assert "columns found: answer, question" in _refused(tmp_path, "--dataset-id", str(data))
    assert "--data-format prompt-completion fits it" in _refused(
        tmp_path, "--dataset-id", str(_prompt_file(tmp_path)), "--data-format", "chat")
    data.write_text(json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    assert "unknown role 'bot'" in _refused(tmp_path, "--dataset-id", str(data))
    template = tmp_path / "t.jinja"
    template.write_text("{{ raise_exception('only two roles') }}")
    assert "only two roles" in _refused(tmp_path, "--dataset-id", str(_chat_file(
        tmp_path / "c.jsonl", 3)), "--chat-template", str(template))


def _prompt_file(tmp_path) -> Path:
    path = tmp_path / "pc.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    return path


def test_model_folders_with_custom_code_or_pickled_weights_are_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "auto_map": {"AutoModelForCausalLM": "modeling_x.Model"}}))
    assert "needs custom code" in _refused(tmp_path, "--init-from", str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    assert "only pickled weights (pytorch_model.bin)" in _refused(tmp_path, "--init-from",
                                                                 str(folder))


def test_eval_scores_chat_data_on_its_assistant_tokens_as_validation_did(tmp_path):
    from kerastrain.data.chat_template import ChatTemplate
    from kerastrain.data.formats import ChatFormat, FormatContext
    from kerastrain.data.tokenizer import ByteTokenizer

    data = _chat_file(tmp_path / "chat.jsonl", 40)
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--dataset-id", str(data),
                    "--seq-len", "128", "--max-steps", "3", "--eval-every", "3",
                    "--val-split", "train", "--max-val-examples", "6")
    assert result.exit_code == 0, result.output
    val = [r for r in _metrics(out, "eval")][-1]
    scored = invoke("eval", str(out), "--json")
    assert scored.exit_code == 0, scored.output
    scored = json.loads(scored.output.strip().splitlines()[-1])
    assert scored["loss"] == pytest.approx(val["val_loss"], rel=1e-5)
    assert scored["tokens"] == val["val_tokens"]
    # Those are the assistant turns' tokens (each conversation fits in --seq-len 128 or is cut).
    records = [json.loads(line) for line in data.read_text().splitlines()[:6]]
    context = FormatContext(tokenizer=ByteTokenizer(), template=ChatTemplate(
        json.loads((out / "chat_template.json").read_text())["chat_template"]))
    examples = ChatFormat().encode(records, context)
    assert val["val_tokens"] == sum(sum(e.mask[1:129]) for e in examples)


def test_eval_of_the_same_files_scores_what_validation_scored(tmp_path):
    """``eval --dataset-id`` keeps every other option of the run (``--train-on-prompt``,
    ``--overlong``...): the same files score the same tokens and loss as validation did."""
    data = _chat_file(tmp_path / "chat.jsonl", 40)
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--dataset-id", str(data),
                    "--seq-len", "163", "--max-steps", "3", "--eval-every", "3",
                    "--val-split", "train", "--max-val-examples", "9", "--train-on-prompt",
                    "--overlong", "drop")
    assert result.exit_code == 0, result.output
    val = [r for r in _metrics(out, "eval")][-1]
    scored = invoke("eval", str(out), "--dataset-id", str(data), "--split", "train",
                    "--max-examples", "9", "--json")
    assert scored.exit_code == 0, scored.output
    scored = json.loads(scored.output.strip().splitlines()[-1])
    assert (scored["tokens"], scored["loss"]) == (val["val_tokens"],
                                                  pytest.approx(val["val_loss"], rel=1e-5))
    # --overlong drop and --train-on-prompt, as the run said: of the first 9 conversations
    # (163 to 166 bytes with ChatML) those of at most 164 tokens, every target of them trained.
    lengths = [163, 164, 165, 163, 164, 166, 164, 164, 165]
    assert val["val_tokens"] == sum(n - 1 for n in lengths if n <= 164)
    truncate = invoke("eval", str(out), "--dataset-id", str(data), "--split", "train",
                      "--max-examples", "9", "--overlong", "truncate", "--json")
    assert json.loads(truncate.output.strip().splitlines()[-1])["tokens"] > val["val_tokens"]
    bad = invoke("eval", str(out), "--batch-size", "0")
    assert bad.exit_code == 2 and bad.output.count("Error:") == 1, bad.output
    assert "--batch-size" in bad.output
