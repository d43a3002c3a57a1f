"""The training loop: accumulation, non-finite loss, keep-last, plot (kill -9 resume:
test_kill_9_resume.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY, invoke


def _metrics(out: Path, kind="train") -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == kind]


def _weights(checkpoint: Path) -> list[np.ndarray]:
    """The checkpoint's weights, sorted by variable path (the guide's plain Orbax restore)."""
    import jax
    import orbax.checkpoint as ocp

    params = ocp.PyTreeCheckpointer().restore((checkpoint / "state" / "model").absolute())
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    assert flat
    return [np.asarray(a) for _, a in sorted(flat, key=lambda x: str(x[0]))]


def test_accumulation_matches_a_large_batch():
    import keras

    from kerastrain.config import ModelConfig, RunConfig, TrainConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import initial_state, make_steps

    rng = np.random.default_rng(0)
    x = rng.integers(0, 64, size=(32, 16)).astype("int32")
    y = rng.integers(0, 64, size=(32, 16)).astype("int32")
    results = []
    for batch, accum in ((32, 1), (8, 4)):
        keras.utils.set_random_seed(3)
        cfg = RunConfig(model=ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=2,
                                          num_heads=2, d_ff=64, dropout_rate=0.0),
                        # Adam divides by sqrt(v) + epsilon: with the LLM default 1e-8 a
                        # near-zero gradient's float rounding (summed in another order) becomes a
                        # visible update; 1e-6 keeps this a test of accumulation.
                        train=TrainConfig(gradient_accumulation_steps=accum, adam_epsilon=1e-6))
        model = build_model(cfg.model)
        opt = make_optimizer(cfg, 1e-2, model)
        train_step, _ = make_steps(model, opt)
        state = initial_state(model, opt)
        for i in range(0, 32, batch):
            _, state = train_step(state, x[i:i + batch], y[i:i + batch])
        results.append([np.asarray(v) for v in state[0]])
    changed = any(not np.allclose(a, b) for a, b in zip(results[0], results[0][::-1], strict=True))
    assert changed
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)



def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path, kerastrain_plugin):
    from kerastrain.hookspecs import hookimpl

    out = tmp_path / "out"
    base = [*TINY, "--output-dir", str(out), "--save-every", "5", "--log-every", "1"]
    assert invoke("run", *base, "--max-steps", "5").exit_code == 0

    class Poison:
        @hookimpl
        def on_train_start(self, run):
            weights = run.model.trainable_weights[0]
            weights.assign(np.full(weights.shape, np.nan, dtype="float32"))

    kerastrain_plugin(Poison(), name="poison")
    result = invoke("run", *base, "--max-steps", "10")
    assert result.exit_code == 1
    assert "loss became nan at step 6" in result.output
    assert (out / "final_checkpoint" / "manifest.json").exists()
    assert not (out / "checkpoint_step_10").exists()


def test_keep_last_and_plot(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", *TINY, "--output-dir", str(out), "--max-steps", "12",
                    "--save-every", "2", "--keep-last", "2", "--log-every", "2",
                    "--eval-every", "6")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("checkpoint_step_*")) == [
        "checkpoint_step_10", "checkpoint_step_8"]
    assert _metrics(out, "eval")
    plotted = invoke("plot", str(out))
    assert plotted.exit_code == 0
    png = out / "training_curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def test_weight_decay_skips_norms_and_biases():
    from kerastrain.config import ModelConfig, RunConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.training.optimizer import make_optimizer

    for rmsnorm in (True, False):
        cfg = RunConfig(model=ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=1,
                                          num_heads=2, d_ff=64, use_rmsnorm=rmsnorm))
        model = build_model(cfg.model)
        opt = make_optimizer(cfg, 1e-3, model)
        decayed = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
        assert decayed, "matrices take weight decay"
        assert all(len(v.shape) >= 2 for v in model.trainable_variables if v.path in decayed)
        assert any("norm" in v.path for v in model.trainable_variables if v.path not in decayed)


@pytest.mark.slow
def test_lora_fine_tune_from_a_base_run_resumes_and_loads(tmp_path):
    base, lora = tmp_path / "base", tmp_path / "lora"
    assert invoke("run", *TINY, "--output-dir", str(base), "--max-steps", "4").exit_code == 0
    args = [*TINY, "--output-dir", str(lora), "--init-from", str(base / "final_checkpoint"),
            "--use-lora", "--lora-rank", "2", "--save-every", "2", "--log-every", "1",
            "--tokenizer-path", str(base / "tokenizer.json")]
    first = invoke("run", *args, "--max-steps", "4")
    assert first.exit_code == 0, first.output
    assert "Initialized weights from" in first.output
    more = invoke("run", *args, "--max-steps", "6")
    assert more.exit_code == 0, more.output
    assert "Resuming from" in more.output
    assert [r["step"] for r in _metrics(lora)] == [1, 2, 3, 4, 5, 6]
    import kerastrain
    from kerastrain.model.lora import LORA_TARGETS

    model, tokenizer = kerastrain.load(lora)
    base_model, _ = kerastrain.load(base)
    assert not any("lora" in v.path for v in model.weights)  # loaded without LoRA, merged
    merged = []
    for tuned, original in zip(model.weights, base_model.weights, strict=True):
        assert tuned.path == original.path
        same = np.array_equal(np.asarray(tuned.value), np.asarray(original.value))
        layer, name = tuned.path.split("/")[-2:]
        if layer in LORA_TARGETS and name == "kernel":
            merged.append(not same)
        else:  # frozen by LoRA: embeddings, norms, biases
            assert same, tuned.path
    assert merged and all(merged)  # every adapted kernel carries its trained adapter
    assert tokenizer.vocab_size == 257


def test_keep_last_spares_every_folder_a_plugin_names_in_checkpoints_in_use(
        kerastrain_plugin, kerastrain_run):
    from kerastrain.hookspecs import hookimpl

    class Holds:
        def __init__(self, step):
            self.step = step

        @hookimpl
        def checkpoints_in_use(self, run):
            return [run.output_dir / f"checkpoint_step_{self.step}"]

    kerastrain_plugin(Holds(2), name="holds-2")
    kerastrain_plugin(Holds(4), name="holds-4")  # the loop keeps the union of the answers
    result = kerastrain_run("--max-steps", "8", "--save-every", "2", "--keep-last", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in result.output_dir.glob("checkpoint_step_*")) == [
        "checkpoint_step_2", "checkpoint_step_4", "checkpoint_step_6"]
