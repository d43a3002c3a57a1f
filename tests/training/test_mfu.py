"""MFU: FLOPs per token from the configuration, a cached CPU peak, and MFU in every log."""

import json

import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.model.gpt import build_model
from kerastrain.training import flops
from tests.helpers import TINY, kerastrain


def test_matmul_parameters_match_the_model():
    for swiglu in (True, False):
        cfg = ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=2, num_heads=2,
                          d_ff=64, use_swiglu=swiglu)
        model = build_model(cfg)
        matrices = sum(int(np.prod(v.shape)) for v in model.trainable_variables
                       if len(v.shape) == 2 and "embedding" not in v.path)
        assert flops.matmul_parameters(cfg) == matrices + 64 * 32  # + the tied output projection
        assert flops.flops_per_token(cfg) == 6 * flops.matmul_parameters(cfg) + 12 * 2 * 32 * 16


def test_cpu_peak_is_measured_and_the_best_figure_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    peak, source = flops.device_peak_flops("float32")
    assert 1e8 < peak < 1e14 and "measured" in source
    cache = tmp_path / "kerastrain" / "peak_flops.json"
    stored = json.loads(cache.read_text())
    assert list(stored.values()) == [peak]
    key = next(iter(stored))
    cache.write_text(json.dumps({key: 1e15}))  # a higher cached figure wins over a new reading
    assert flops.device_peak_flops("float32")[0] == 1e15
    cache.write_text(json.dumps({key: 1.0}))  # a lower one is replaced
    assert flops.device_peak_flops("float32")[0] > 1e8
    assert json.loads(cache.read_text())[key] > 1e8


def test_the_peak_is_measured_when_first_asked_not_when_the_meter_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "kerastrain" / "peak_flops.json"
    meter = flops.MfuMeter(ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=2,
                                       num_heads=2, d_ff=64))
    assert not cache.exists()  # nothing measured before the first step
    mfu = meter(1000.0)
    stored = json.loads(cache.read_text())
    assert meter.peak == max(stored.values()) and "measured" in meter.peak_source
    assert mfu == 1000.0 * meter.flops_per_token / meter.peak


def test_tokens_per_second_and_mfu_are_logged_and_summarized(tmp_path):
    out = tmp_path / "run"
    result = kerastrain("run", *TINY, "--max-steps", "6", "--log-every", "2",
                        "--output-dir", str(out), env={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3 and all(0 < r["mfu"] < 1 and r["tokens_per_sec"] > 0 for r in train)
    summary = next(r for r in records if r["kind"] == "summary")
    assert 0 < summary["mfu"] < 1 and summary["flops_per_token"] > 0
    assert "MFU" in result.stdout
    assert (tmp_path / "kerastrain" / "peak_flops.json").exists()
    events = list((out / "tensorboard").glob("events*"))
    assert events and b"train/mfu" in events[0].read_bytes()
