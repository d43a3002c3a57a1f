"""--lr-schedule cosine|wsd|linear|constant, --decay-fraction, --min-lr-ratio: every decay ends at
--min-lr-ratio × peak on the run's last update (updates 0 .. total - 1); the warm-up is fixed by
the first run, so a WSD run resumed with a larger --max-steps continues at the peak."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerastrain.cli.options import parse_run_args
from kerastrain.training.optimizer import make_schedule
from tests.helpers import TINY, invoke


def rates(*args, total=20, warmup=None):
    cfg = parse_run_args(["--learning-rate", "1e-2", "--warmup-steps", "4", *args])
    schedule, warmup = make_schedule(cfg, total, warmup)
    return [float(schedule(step)) for step in range(total)], warmup


def test_the_shapes_of_the_four_schedules():
    warm = [1e-2 * (s + 1) / 5 for s in range(4)]
    wsd, warmup = rates("--lr-schedule", "wsd", "--decay-fraction", "0.25", "--min-lr-ratio",
                        "0.1")
    assert warmup == 4
    # 4 warm-up, 11 at the peak, the last 5 linear down to 10%, reached at update 19, the last.
    np.testing.assert_allclose(wsd, warm + [1e-2] * 11 + [1e-2 * (1 - 0.9 * k / 5)
                                                          for k in range(1, 6)], rtol=1e-6)
    lin, _ = rates("--lr-schedule", "linear", "--min-lr-ratio", "0")
    np.testing.assert_allclose(lin, warm + [1e-2 * (1 - k / 15) for k in range(16)], rtol=1e-5,
                               atol=1e-9)
    const, _ = rates("--lr-schedule", "constant")
    np.testing.assert_allclose(const, warm + [1e-2] * 16, rtol=1e-6)
    cos, _ = rates("--lr-schedule", "cosine", "--min-lr-ratio", "0.2")
    expected = [1e-2 * (0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi * k / 15))) for k in range(16)]
    np.testing.assert_allclose(cos, warm + expected, rtol=1e-5)


def test_a_decay_of_one_update_runs_that_update_at_the_minimum():
    # round(20 x 0.05) = 1 update of decay: the last, at 10% of the peak.
    wsd, _ = rates("--lr-schedule", "wsd", "--decay-fraction", "0.05", "--min-lr-ratio", "0.1")
    np.testing.assert_allclose(wsd[4:], [1e-2] * 15 + [1e-3], rtol=1e-6)
    for kind in ("linear", "cosine", "wsd"):  # no room after the warm-up: the last at the minimum
        two, warmup = rates("--lr-schedule", kind, "--min-lr-ratio", "0.1", total=2)
        assert warmup == 1
        np.testing.assert_allclose(two, [5e-3, 1e-3], rtol=1e-6)
        one, _ = rates("--lr-schedule", kind, "--min-lr-ratio", "0.1", total=1)
        np.testing.assert_allclose(one, [1e-3], rtol=1e-6)


def test_a_given_warmup_is_kept_whatever_the_length():
    # The first run (8 updates) capped --warmup-steps 4 at 4; a resume at 40 updates keeps it.
    first, warmup = rates("--lr-schedule", "constant", "--warmup-steps", "6", total=8)
    assert warmup == 4
    longer, kept = rates("--lr-schedule", "constant", "--warmup-steps", "6", total=40,
                         warmup=warmup)
    assert kept == 4 and longer[:8] == first and longer[4:] == [float(np.float32(1e-2))] * 36


def _train(out, steps: int, *extra, schedule="wsd") -> list[float]:
    result = invoke("run", "--output-dir", str(out), *TINY, "--max-steps", str(steps),
                    "--log-every", "1", "--lr-schedule", schedule, "--decay-fraction", "0.25",
                    "--eval-every", "1000", "--save-every", "1000", *extra)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if r.get("kind") == "train"]


@pytest.mark.parametrize("schedule, expected", [
    # 10 updates, peak 1e-2, minimum 1e-3, warm-up 2 (peak x 1/3, 2/3): the rate the optimizer
    # applied at every update, as the loop reads it from the optimizer's own state.
    ("linear", [1e-2 * (1 - 0.9 * k / 7) for k in range(8)]),
    ("cosine", [1e-2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * k / 7))) for k in range(8)]),
    ("wsd", [1e-2] * 6 + [5.5e-3, 1e-3]),  # --decay-fraction 0.2: the last 2 updates decay
])
def test_a_run_applies_its_minimum_at_its_last_update(tmp_path, schedule, expected):
    applied = _train(tmp_path / schedule, 10, "--learning-rate", "1e-2", "--min-lr-ratio", "0.1",
                     "--decay-fraction", "0.2", schedule=schedule)
    np.testing.assert_allclose(applied, [1e-2 / 3, 2e-2 / 3, *expected], rtol=1e-6)
    assert applied[-1] == pytest.approx(1e-3, rel=1e-6)


def test_resuming_a_wsd_run_with_more_steps_extends_its_stable_phase(tmp_path):
    """8 updates (decay at 6, 7), resumed to 16 (decay from 12): the logged rates, read from the
    optimizer, are those of a 16-update run outside the first run's own decay."""
    straight = _train(tmp_path / "straight", 16)
    first = _train(tmp_path / "resumed", 8)
    resumed = _train(tmp_path / "resumed", 16)
    assert len(straight) == len(resumed) == 16 and resumed[:8] == first
    assert resumed[:6] == straight[:6]  # before the first run's decay
    assert resumed[6:8] != straight[6:8]  # the first run decayed there
    assert resumed[8:] == straight[8:]  # from the resume on, the 16-update schedule
    assert straight[2:12] == [3e-3] * 10  # the stable phase, at --learning-rate


def test_a_resume_keeps_the_first_runs_warmup(tmp_path):
    """--warmup-steps 20 over 8 updates is capped at 4; resumed to 40 updates the run keeps 4 (a
    40-update run alone would warm up over 20): from the resume on it runs at the peak, as a
    40-update run made with --warmup-steps 4 does, and never warms up again."""
    first = _train(tmp_path / "resumed", 8, "--warmup-steps", "20")
    resumed = _train(tmp_path / "resumed", 40, "--warmup-steps", "20")
    with_first_warmup = _train(tmp_path / "warmup4", 40, "--warmup-steps", "4")
    own_warmup = _train(tmp_path / "warmup20", 40, "--warmup-steps", "20")
    assert resumed[:8] == first and first[:4] == with_first_warmup[:4]
    assert resumed[8:] == with_first_warmup[8:]
    assert resumed[8:30] == [3e-3] * 22  # the peak until the 40-update run's decay (30..39)
    assert resumed[-1] == pytest.approx(3e-4, rel=1e-6)
    assert max(own_warmup[8:20]) < 3e-3  # what a warm-up decided by the run's length gives
    record = json.loads((tmp_path / "resumed" / "resolved_run.json").read_text())
    assert record["warmup_steps"] == 4
