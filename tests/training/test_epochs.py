"""``--epochs N`` trains every example N times, and the run's last update is the schedule's:
the updates are counted on the pipeline the run trains from (``training/run_length.py``), and
the summary's counts are of the batches trained, checked against counts made by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TINY, invoke
from tests.training.test_chat_training import _chat_file
from tests.training.test_mixture_training import _summary


def _resolved(out: Path) -> dict:
    return json.loads((out / "resolved_run.json").read_text())


def _run(out: Path, *args: str):
    result = invoke("run", "--output-dir", str(out), *TINY, "--eval-every", "1000",
                    "--log-every", "1", *args)
    assert result.exit_code == 0, result.output
    return _summary(out)


def _chat_trained_tokens(data: Path, out: Path) -> tuple[int, int]:
    """(examples, trained targets of all of them), encoded one by one with the run's own
    tokenizer and template: what one epoch must train."""
    from kerastrain.data.chat_template import TEMPLATE_FILE, load_chat_template
    from kerastrain.data.formats import ChatFormat, FormatContext
    from kerastrain.data.tokenizer import load_tokenizer

    records = [json.loads(line) for line in data.read_text().splitlines()]
    context = FormatContext(tokenizer=load_tokenizer(out / "tokenizer.json"),
                            template=load_chat_template(out / TEMPLATE_FILE))
    examples = [ChatFormat().encode([r], context)[0] for r in records]
    return len(records), sum(sum(e.mask[1:]) for e in examples)


@pytest.mark.parametrize("extra", [[], ["--no-packing"], ["--gradient-accumulation-steps", "3"]],
                         ids=["packed", "no-packing", "accumulation"])
def test_epochs_train_every_chat_example_that_many_times(tmp_path, extra):
    data = _chat_file(tmp_path / "chat.jsonl", 37)
    out = tmp_path / "out"
    summary = _run(out, "--dataset-id", str(data), "--seq-len", "256", "--epochs", "2", *extra)
    examples, trained = _chat_trained_tokens(data, out)
    assert summary["reason"] == "epochs completed"
    assert summary["steps"] == _resolved(out)["total_steps"]  # the schedule's last update
    assert (summary["examples_trained"], summary["trained_tokens_total"]) == (2 * examples,
                                                                             2 * trained)
    assert summary["epochs_completed"] == 2
    assert (summary["overlong_truncated"], summary["overlong_dropped"]) == (0, 0)


def test_epochs_of_plain_text_train_every_window_of_the_stream(tmp_path):
    docs = [f"document {i}: " + "words and more words. " * (1 + i % 5) for i in range(53)]
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "out"
    summary = _run(out, "--dataset-id", str(data), "--epochs", "2",
                   "--gradient-accumulation-steps", "2")
    # Bytes: each document's UTF-8 bytes and an EOS; two epochs are one stream of windows of
    # seq_len + 1 tokens, seq_len apart; only the stream's last tokens short of a window are left.
    stream = 2 * sum(len(d.encode()) + 1 for d in docs)
    windows = (stream - 33) // 32 + 1
    assert summary["trained_tokens_total"] == windows * 32
    assert summary["steps"] == _resolved(out)["total_steps"] == -(-windows // (4 * 2))
    assert summary["reason"] == "epochs completed"
    assert 2 * len(docs) - 2 <= summary["examples_trained"] <= 2 * len(docs)


def test_stride_is_refused_where_rows_are_packed(tmp_path):
    data = _chat_file(tmp_path / "chat.jsonl", 10)
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--dataset-id", str(data),
                    "--stride", "16", "--max-steps", "2")
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--stride applies to plain text" in errors[0], result.output
    assert not out.exists() or not any(out.iterdir())
