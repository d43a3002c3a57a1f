"""--optimizer muon: which variables Muon updates, the update it makes (against an independent
Newton-Schulz in numpy), and the same update on FSDP-sharded matrices as on one device."""

from __future__ import annotations

import json

import numpy as np

from kerastrain.cli.options import parse_run_args
from kerastrain.config import ModelConfig
from kerastrain.model.gpt import apply_lora, build_model
from kerastrain.training.optimizer import make_optimizer, muon_groups
from tests.training.test_distribution import run_script

SHAPE = dict(vocab_size=64, seq_len=16, d_model=32, num_layers=1, num_heads=2, d_ff=64)
ARGS = ["--optimizer", "muon", "--learning-rate", "1e-3", "--muon-lr", "4e-3",
        "--weight-decay", "0.1", "--muon-weight-decay", "0.05", "--grad-clip", "0"]


def newton_schulz(g: np.ndarray, steps: int = 5) -> np.ndarray:
    """The quintic iteration of Keller Jordan's Muon (the coefficients Keras uses), in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def test_matrices_take_muon_and_embeddings_head_norms_take_adamw():
    cfg = parse_run_args(ARGS)
    model = build_model(ModelConfig(**SHAPE, tie_embeddings=False))
    groups = muon_groups(make_optimizer(cfg, 1e-3, model), model.trainable_variables)
    assert groups["muon"] == [v.path for v in model.trainable_variables
                              if v.path.startswith("block_") and len(v.shape) == 2]
    assert sorted(groups["adamw"]) == [
        "block_0/attention_norm/scale", "block_0/mlp_norm/scale", "final_norm/scale",
        "token_embedding/embeddings", "token_embedding/reverse_embeddings"]
    lora = build_model(ModelConfig(**SHAPE))
    apply_lora(lora, 4)
    groups = muon_groups(make_optimizer(cfg, 1e-3, lora), lora.trainable_variables)
    assert groups["adamw"] == [] and len(groups["muon"]) == 14  # 7 adapted kernels x (a, b)
    assert all("lora_kernel" in p for p in groups["muon"])


def test_one_update_is_newton_schulz_at_muon_lr_and_adamw_at_learning_rate():
    cfg = parse_run_args(ARGS)
    model = build_model(ModelConfig(**SHAPE))
    opt = make_optimizer(cfg, cfg.train.learning_rate, model)
    rng = np.random.default_rng(0)
    before = [np.asarray(v.value, "float64") for v in model.trainable_variables]
    grads = [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
    opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    by_path = {v.path: i for i, v in enumerate(model.trainable_variables)}
    # A hidden matrix: decoupled decay at --muon-lr x --muon-weight-decay, then the
    # orthogonalised Nesterov momentum (first step: 1.95 g), scaled to AdamW's RMS (Moonlight).
    i = by_path["block_0/mlp/down/kernel"]
    w, g = before[i], grads[i].astype("float64")
    update = newton_schulz(1.95 * g) * np.sqrt(max(g.shape)) * 0.2
    expected = w - w * 0.05 * 4e-3 - 4e-3 * update
    np.testing.assert_allclose(model.trainable_variables[i].value, expected, rtol=2e-4, atol=2e-6)
    # The embedding: AdamW's first step (m / sqrt(v) = sign(g)) at --learning-rate, decayed by
    # --weight-decay x --learning-rate.
    i = by_path["token_embedding/embeddings"]
    w, g = before[i], grads[i]
    expected = w - w * 0.1 * 1e-3 - 1e-3 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(model.trainable_variables[i].value, expected, rtol=1e-5, atol=1e-7)
    # A norm scale: AdamW without decay.
    i = by_path["final_norm/scale"]
    np.testing.assert_allclose(model.trainable_variables[i].value,
                               before[i] - 1e-3 * np.sign(grads[i]), rtol=1e-5, atol=1e-7)


def test_newton_schulz_on_fsdp_sharded_matrices_equals_one_device():
    """Two forced CPU devices: Muon's update (Keras' ``stateless_apply``, jitted) of matrices
    sharded over --fsdp 2 equals the update of the same matrices on one device, for the same
    gradients (fixed ones: the gradients' own float32 reduction order is not Muon's business)."""
    script = """
        import json
        import jax, keras, numpy as np
        from kerastrain.cli.options import parse_run_args
        from kerastrain.model.gpt import build_model
        from kerastrain.training.distribution import make_mesh_plan
        from kerastrain.training.optimizer import make_optimizer

        def updates(args, sharded):
            cfg = parse_run_args(args)
            plan = make_mesh_plan(cfg) if sharded else None
            keras.utils.set_random_seed(0)
            with plan.scope(cfg.model) if plan else keras.name_scope("one"):
                model = build_model(cfg.model)
                opt = make_optimizer(cfg, 1e-2, model)
            weights = [v.value for v in model.trainable_variables]
            rng = np.random.default_rng(1)
            grads = [jax.device_put(rng.normal(size=w.shape).astype("float32"), w.sharding)
                     for w in weights]
            apply = jax.jit(opt.stateless_apply)
            opt_vars = [v.value for v in opt.variables]
            state = weights
            for _ in range(2):
                state, opt_vars = apply(opt_vars, grads, state)
            shards = [len(s.sharding.device_set) for s, v in zip(state, model.trainable_variables)
                      if len(v.shape) == 2 and v.path.startswith("block_")]
            deltas = [np.asarray(s, "float64") - np.asarray(w, "float64")
                      for s, w in zip(state, weights)]
            return deltas, shards

        base = ["--vocab-size", "64", "--seq-len", "16", "--d-model", "32", "--num-layers", "1",
                "--num-heads", "2", "--d-ff", "64", "--optimizer", "muon", "--muon-lr", "0.01"]
        one, _ = updates(base, False)
        fsdp, shards = updates(base + ["--fsdp", "2"], True)
        worst = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(one, fsdp))
        print("RESULT" + json.dumps({"worst": worst, "shards": shards}))
    """
    proc = run_script(script, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert min(result["shards"]) == 2, result  # the matrices really were split over 2 devices
    assert result["worst"] < 1e-5, result  # relative to each variable's largest change


def test_plan_says_which_variable_muon_updates():
    from tests.helpers import invoke

    result = invoke("plan", "--optimizer", "muon", "--vocab-size", "64", "--seq-len", "16",
                    "--d-model", "32", "--num-layers", "1", "--num-heads", "2", "--d-ff", "64",
                    "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)["optimizer_groups"]
    assert len(groups["muon"]) == 7 and "token_embedding/embeddings" in groups["adamw"]
