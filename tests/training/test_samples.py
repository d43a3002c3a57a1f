"""Samples while training: --sample-every N, and at each evaluation on a terminal."""

from __future__ import annotations

import io
import json

from rich.console import Console

from tests.helpers import TINY, invoke


def _samples(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "sample"]


def test_sample_every_prints_and_logs_samples_from_the_current_weights(tmp_path):
    import kerastrain
    from kerastrain.training.samples import NEW_TOKENS, Sampler

    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--max-steps", "4",
                    "--sample-every", "2", "--sample-prompt", "The os", "--eval-every", "100")
    assert result.exit_code == 0, result.output
    samples = _samples(out)
    assert [s["step"] for s in samples] == [2, 4]
    assert all(s["prompt"] == "The os" and s["text"] for s in samples)
    assert f"step 4 sample: The os{samples[1]['text']}" in result.output
    # The step-4 sample came from the weights of step 4, which the final checkpoint holds.
    model, tokenizer = kerastrain.load(out)
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables])
    ids = Sampler(model, 32).generate(state, tokenizer.encode_batch(["The os"])[0],
                                      min(NEW_TOKENS, 31))
    assert tokenizer.decode(ids) == samples[1]["text"]


def test_a_terminal_gets_a_sample_at_each_evaluation_and_a_pipe_does_not(tmp_path):
    from kerastrain.cli.options import parse_run_args
    from kerastrain.training.runner import run_training

    def config(out, *extra):
        return parse_run_args([*TINY, "--output-dir", str(out), "--max-steps", "4",
                               "--eval-every", "2", *extra])

    terminal = Console(file=io.StringIO(), force_terminal=True, width=200)
    run_training(config(tmp_path / "tty"), terminal)
    assert [s["step"] for s in _samples(tmp_path / "tty")] == [2, 4]
    assert "step 2 sample: The" in terminal.file.getvalue()
    pipe = Console(file=io.StringIO(), force_terminal=False)
    run_training(config(tmp_path / "pipe"), pipe)
    assert _samples(tmp_path / "pipe") == []


def test_sample_every_zero_turns_samples_off_even_on_a_terminal():
    from types import SimpleNamespace

    from kerastrain.training.samples import Samples

    for every, terminal, expected in ((0, True, 0), (None, True, 1), (None, False, 0), (3, False, 0)):
        config = SimpleNamespace(output=SimpleNamespace(sample_every=every, sample_prompt="The"),
                                 model=SimpleNamespace(seq_len=32))
        samples = Samples(None, None, config, say=print, log=None, terminal=terminal)
        said = []
        samples.sample = lambda step, state, said=said: said.append(step)
        samples.after_evaluation(5, state=None)
        assert len(said) == expected, (every, terminal)
