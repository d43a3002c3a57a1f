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
