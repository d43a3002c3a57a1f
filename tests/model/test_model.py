"""The GPT: every switch builds and learns, names are stable, precision, LoRA, verified loading."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerastrain.config import ModelConfig
from kerastrain.errors import CheckpointError
from kerastrain.model.gpt import apply_lora, apply_precision, build_model, merge_lora
from kerastrain.model.presets import count_lora_parameters, count_parameters
from kerastrain.model.sharded_weights import restore_weights
from tests.helpers import write_checkpoint

TINY = dict(vocab_size=64, seq_len=16, d_model=32, num_layers=2, num_heads=4, d_ff=64)
SWITCHES = {
    "layernorm": dict(use_rmsnorm=False),
    "mlp-gelu": dict(use_swiglu=False, activation="gelu"),
    "mlp-relu": dict(use_swiglu=False, activation="relu"),
    "mlp-silu": dict(use_swiglu=False, activation="silu"),
    "learned-positions": dict(use_rope=False),
    "untied": dict(tie_embeddings=False),
    "no-dropout": dict(dropout_rate=0.0),
}
# Every switch in four builds (each build compiles a train step, ~4 s on 2 cores).
COMBINED = {
    "default": {},
    "layernorm+gelu+learned+untied": {
        **SWITCHES["layernorm"], **SWITCHES["mlp-gelu"], **SWITCHES["learned-positions"],
        **SWITCHES["untied"],
    },
    "relu": SWITCHES["mlp-relu"],
    "silu+no-dropout": {**SWITCHES["mlp-silu"], **SWITCHES["no-dropout"]},
}


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def fixed_batch(cfg: ModelConfig, batch: int = 4, seed: int = 0):
    tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, cfg.seq_len + 1))
    return tokens[:, :-1].astype("int32"), tokens[:, 1:].astype("int32")


def train_losses(model, x, y, steps: int, lr: float = 1e-2) -> list[float]:
    model.compile(
        optimizer=keras.optimizers.AdamW(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def check_builds_counts_and_learns(overrides: dict) -> None:
    keras.utils.set_random_seed(0)
    cfg = tiny(**overrides)
    model = build_model(cfg)
    x, y = fixed_batch(cfg)
    logits = model(x)
    assert tuple(logits.shape) == (4, cfg.seq_len, cfg.vocab_size)
    assert str(logits.dtype) == "float32"
    assert model.count_params() == count_parameters(cfg)
    losses = train_losses(model, x, y, steps=6)
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.2, losses


@pytest.mark.parametrize("combo", list(COMBINED))
def test_switches_build_count_and_learn(combo):
    check_builds_counts_and_learns(COMBINED[combo])


@pytest.mark.slow
@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_alone_builds_counts_and_learns(switch):
    check_builds_counts_and_learns(SWITCHES[switch])


def test_variable_paths_are_explicit_and_stable():
    a = [v.path for v in build_model(tiny()).weights]
    b = [v.path for v in build_model(tiny()).weights]  # a second model in the same process
    assert a == b
    assert "block_0/attention/query/kernel" in a and "block_1/mlp/gate/kernel" in a
    assert a[0] == "token_embedding/embeddings" and a[-1] == "final_norm/scale"
    assert not any("dense" in p or "embedding_1" in p for p in a)


@pytest.mark.parametrize("overrides", [{}, dict(mixed_precision=True),
                                       dict(post_norms=True, qk_norm=True),
                                       {**SWITCHES["learned-positions"], **SWITCHES["mlp-gelu"]}])
def test_a_blocks_declared_output_spec_is_the_traced_one(overrides):
    """The functional build takes a block's output shape and dtype from
    ``TransformerBlock.compute_output_spec`` instead of tracing it: it must be what tracing the
    block's call gives (Keras' own ``Layer.compute_output_spec``)."""
    cfg = tiny(**overrides)
    try:
        apply_precision(cfg)
        model = build_model(cfg)
        block = model.blocks[0]
        x = keras.KerasTensor((None, None, cfg.d_model), dtype=block.compute_dtype)
        declared = block.compute_output_spec(x)
        traced = keras.layers.Layer.compute_output_spec(block, x)
        assert (declared.shape, declared.dtype) == (traced.shape, traced.dtype)
        assert str(model.blocks[-1].output.dtype) == block.compute_dtype
    finally:
        apply_precision(tiny())


def test_causal_attention_ignores_future_tokens():
    cfg = tiny(dropout_rate=0.0)
    model = build_model(cfg)
    x, _ = fixed_batch(cfg, batch=1)
    changed = x.copy()
    changed[0, 10:] = (changed[0, 10:] + 1) % cfg.vocab_size
    a, b = np.asarray(model(x)), np.asarray(model(changed))
    np.testing.assert_allclose(a[0, :10], b[0, :10], atol=1e-5)
    assert not np.allclose(a[0, 10:], b[0, 10:])


def test_mixed_precision_policy():
    cfg = tiny(mixed_precision=True)
    try:
        assert apply_precision(cfg) == "mixed_bfloat16"
        model = build_model(cfg)
        assert {v.dtype for v in model.weights} == {"float32"}
        assert model.blocks[0].attention.query.compute_dtype == "bfloat16"
        x, y = fixed_batch(cfg)
        hidden = model.blocks[0](model.token_embedding(x))
        assert str(hidden.dtype) == "bfloat16"
        assert str(model(x).dtype) == "float32"
        losses = train_losses(model, x, y, steps=4)
        assert losses[-1] < losses[0]
    finally:
        apply_precision(tiny())
    assert keras.mixed_precision.global_policy().name == "float32"


def test_lora_trains_only_adapters_and_merges(tmp_path):
    keras.utils.set_random_seed(1)
    cfg = tiny(dropout_rate=0.0)
    model = build_model(cfg)
    before = {v.path: np.asarray(v.value).copy() for v in model.weights}
    trainable = apply_lora(model, rank=4)
    assert trainable == count_lora_parameters(cfg, 4)
    assert all("lora_kernel" in v.path for v in model.trainable_weights)
    x, y = fixed_batch(cfg)
    losses = train_losses(model, x, y, steps=5, lr=3e-2)
    assert losses[-1] < losses[0]
    for v in model.weights:
        if "lora_kernel" not in v.path:
            np.testing.assert_array_equal(np.asarray(v.value), before[v.path], err_msg=v.path)
    assert any(
        np.abs(np.asarray(v.value)).sum() > 0 for v in model.weights if "lora_kernel_b" in v.path
    )
    adapted = np.asarray(model(x))

    # Exact resume of a LoRA run: base kernels and adapters come back as they were.
    checkpoint = write_checkpoint(model, tmp_path / "checkpoint")
    resumed = build_model(cfg)
    apply_lora(resumed, rank=4)
    assert restore_weights(resumed, checkpoint) == len(resumed.weights)
    for a, b in zip(model.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)

    # Into a plain model for inference, each adapter folds into its kernel: the same function.
    plain = build_model(cfg)
    restore_weights(plain, checkpoint)
    np.testing.assert_allclose(np.asarray(plain(x)), adapted, atol=1e-4)
    assert merge_lora(model) == 2 * 7
    np.testing.assert_allclose(np.asarray(model(x)), adapted, atol=1e-4)


def test_verified_restore_round_trip_and_mismatches(tmp_path):
    cfg = tiny()
    model = build_model(cfg)
    checkpoint = write_checkpoint(model, tmp_path / "checkpoint")
    fresh = build_model(cfg)
    restore_weights(fresh, checkpoint)
    for a, b in zip(model.variables, fresh.variables, strict=True):  # dropout RNG states too
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)
    for other in (tiny(num_layers=3), tiny(tie_embeddings=False), tiny(d_model=64)):
        with pytest.raises(CheckpointError, match="different model configuration"):
            restore_weights(build_model(other), checkpoint)
    with pytest.raises(CheckpointError, match="holds no state/model"):
        restore_weights(fresh, tmp_path / "missing")


def test_residual_projections_use_gpt2_scaled_init():
    keras.utils.set_random_seed(0)
    model = build_model(tiny(d_model=64, d_ff=256, num_layers=8))
    std = {v.path: float(np.std(np.asarray(v.value))) for v in model.trainable_variables}
    scaled = 0.02 / np.sqrt(2 * 8)
    residual = [p for p in std if p.endswith(("attention/output/kernel", "mlp/down/kernel"))]
    assert len(residual) == 16
    for path, value in std.items():
        if path in residual:
            assert abs(value - scaled) < 0.1 * scaled, path
        elif path.endswith(("query/kernel", "mlp/up/kernel", "mlp/gate/kernel")):
            assert abs(value - 0.02) < 0.1 * 0.02, path
