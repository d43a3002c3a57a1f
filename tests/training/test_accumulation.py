"""Gradient accumulation is the same training as the larger batch: the schedule advances once per
update and the logged loss is the update's, whatever ``--gradient-accumulation-steps``."""

from __future__ import annotations

import json

import numpy as np

from tests.helpers import TINY, invoke

UPDATES = 32


def _train(out, batch: int, accumulation: int) -> list[dict]:
    args = [a for a in TINY]
    args[args.index("--batch-size") + 1] = str(batch)
    args[args.index("--warmup-steps") + 1] = "8"  # 8 warm-up updates, then 24 of cosine decay
    result = invoke("run", "--output-dir", str(out), *args, "--max-steps", str(UPDATES),
                    "--gradient-accumulation-steps", str(accumulation), "--log-every", "1",
                    "--dropout-rate", "0", "--shuffle-buffer-size", "1",
                    "--window-shuffle-size", "0", "--adam-epsilon", "1e-6",
                    "--max-train-examples", "400", "--eval-every", "1000")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "train"]


def test_four_micro_batches_train_as_one_batch_four_times_larger(tmp_path):
    whole = _train(tmp_path / "whole", batch=8, accumulation=1)
    accumulated = _train(tmp_path / "accumulated", batch=2, accumulation=4)
    assert [r["step"] for r in whole] == [r["step"] for r in accumulated] == list(
        range(1, UPDATES + 1))
    np.testing.assert_allclose([r["lr"] for r in accumulated], [r["lr"] for r in whole])
    # The schedule really rose and fell (a constant rate could not show a schedule run too fast).
    lrs = [r["lr"] for r in whole]
    assert max(lrs) > 3 * lrs[0] and lrs[-1] < max(lrs) / 3
    np.testing.assert_allclose([r["loss"] for r in accumulated], [r["loss"] for r in whole],
                               rtol=2e-4)
    assert whole[-1]["loss"] < whole[0]["loss"] - 0.5  # it trained
    assert accumulated[-1]["tokens_seen"] == whole[-1]["tokens_seen"]


def test_the_rate_read_before_the_last_micro_batch_is_the_rate_applied():
    """Keras evaluates a schedule at its micro-step counter (FACTS.md); the loop reads the rate
    from the optimizer's state before the micro-batch that applies an update and logs it. With
    SGD and a gradient of ones, each update moves every weight by exactly the applied rate: it
    equals the rate read and the schedule at the update count, at every update."""
    import keras

    from kerastrain.cli.options import parse_run_args
    from kerastrain.training.optimizer import applied_rates, make_optimizer, make_schedule

    k, total = 3, 8
    cfg = parse_run_args(["--optimizer", "sgd", "--grad-clip", "0", "--learning-rate", "1e-2",
                          "--warmup-steps", "2", "--lr-schedule", "linear", "--min-lr-ratio",
                          "0.1", "--gradient-accumulation-steps", str(k)])
    schedule, _ = make_schedule(cfg, total)
    # Weights from zero: float32 differences of small weights keep the step to ~1e-6.
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(3, kernel_initializer="zeros", name="dense")])
    optimizer = make_optimizer(cfg, schedule, model)
    weights = [v.value for v in model.trainable_variables]
    opt_vars = [v.value for v in optimizer.variables]
    ones = [keras.ops.ones_like(w) for w in weights]
    read, applied = [], []
    for _ in range(total):
        before = [np.asarray(w) for w in weights]
        for micro in range(k):
            if micro == k - 1:  # as Trainer._update reads it
                read.append(float(applied_rates(optimizer, opt_vars)["lr"]))
            weights, opt_vars = optimizer.stateless_apply(opt_vars, ones, weights)
        applied.append(np.concatenate([(b - np.asarray(w)).ravel()
                                       for w, b in zip(weights, before, strict=True)]))
    expected = [1e-2 / 3, 2e-2 / 3] + [1e-2 * (1 - 0.9 * j / 5) for j in range(6)]
    np.testing.assert_allclose(read, expected, rtol=1e-6)
    for moved, rate in zip(applied, read, strict=True):  # every weight moved by the rate
        np.testing.assert_allclose(moved, rate, rtol=1e-5)
    np.testing.assert_allclose(applied[-1], 1e-3, rtol=1e-5)  # the last update at the minimum


def test_a_resume_with_another_accumulation_is_refused_in_one_line(tmp_path):
    """Keras would apply the resumed run's updates at the wrong micro-steps: refused, and the
    same command with the run's own value resumes."""
    out = tmp_path / "out"
    args = ["run", "--output-dir", str(out), *TINY, "--eval-every", "1000", "--log-every", "1"]
    first = invoke(*args, "--max-steps", "2", "--gradient-accumulation-steps", "2")
    assert first.exit_code == 0, first.output
    for other in ("4", "1"):
        refused = invoke(*args, "--max-steps", "4", "--gradient-accumulation-steps", other)
        assert refused.exit_code == 2, refused.output
        line = refused.output.strip().splitlines()[-1]
        assert line.endswith(f"--gradient-accumulation-steps {other} cannot resume "
                             f"{out / 'final_checkpoint'}, trained with 2; pass "
                             "--gradient-accumulation-steps 2, or --overwrite"), line
    resumed = invoke(*args, "--max-steps", "4", "--gradient-accumulation-steps", "2")
    assert resumed.exit_code == 0, resumed.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("kind") == "train"] == [1, 2, 3, 4]
