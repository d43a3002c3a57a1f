"""--lr-schedule cosine|wsd|linear|constant, --decay-fraction, --min-lr-ratio; a WSD run resumed
with a larger --max-steps continues at the peak (its stable phase is extended)."""

from __future__ import annotations

import json

import numpy as np

from kerastrain.cli.options import parse_run_args
from kerastrain.training.optimizer import make_schedule
from tests.helpers import TINY, invoke


def rates(*args, total=20):
    cfg = parse_run_args(["--learning-rate", "1e-2", "--warmup-steps", "4", *args])
    schedule, warmup = make_schedule(cfg, total)
    return [float(schedule(step)) for step in range(total)], warmup


def test_the_shapes_of_the_four_schedules():
    warm = [1e-2 * (s + 1) / 5 for s in range(4)]
    wsd, warmup = rates("--lr-schedule", "wsd", "--decay-fraction", "0.25", "--min-lr-ratio",
                        "0.1")
    assert warmup == 4
    # 4 warm-up, 11 at the peak, the last 5 linear towards 10% (reached at update 20).
    np.testing.assert_allclose(wsd, warm + [1e-2] * 12 + [1e-2 * (1 - 0.9 * k / 5)
                                                          for k in range(1, 5)], rtol=1e-6)
    lin, _ = rates("--lr-schedule", "linear", "--min-lr-ratio", "0")
    np.testing.assert_allclose(lin, warm + [1e-2 * (1 - k / 16) for k in range(16)], rtol=1e-5,
                               atol=1e-9)
    const, _ = rates("--lr-schedule", "constant")
    np.testing.assert_allclose(const, warm + [1e-2] * 16, rtol=1e-6)
    cos, _ = rates("--lr-schedule", "cosine", "--min-lr-ratio", "0.2")
    expected = [1e-2 * (0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi * k / 16))) for k in range(16)]
    np.testing.assert_allclose(cos, warm + expected, rtol=1e-5)


def _train(out, steps: int, *extra) -> list[float]:
    result = invoke("run", "--output-dir", str(out), *TINY, "--max-steps", str(steps),
                    "--log-every", "1", "--lr-schedule", "wsd", "--decay-fraction", "0.25",
                    "--eval-every", "1000", "--save-every", "1000", *extra)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if r.get("kind") == "train"]


def test_resuming_a_wsd_run_with_more_steps_extends_its_stable_phase(tmp_path):
    """8 updates (decay from update 7), resumed to 16 (decay from 13): the logged rates, read
    from the optimizer, are those of a 16-update run outside the first run's own decay."""
    straight = _train(tmp_path / "straight", 16)
    first = _train(tmp_path / "resumed", 8)
    resumed = _train(tmp_path / "resumed", 16)
    assert len(straight) == len(resumed) == 16 and resumed[:8] == first
    assert resumed[:6] == straight[:6]  # before the first run's decay
    assert resumed[6:8] != straight[6:8]  # the first run decayed there
    assert resumed[8:] == straight[8:]  # from the resume on, the 16-update schedule
    assert straight[2:12] == [3e-3] * 10  # the stable phase, at --learning-rate
