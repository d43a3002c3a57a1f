"""The attention core's recomputing backward: the forward Keras computes, bit for bit; JAX's own
gradients; and no (seq x seq) array kept per layer for the backward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from kerastrain.model.attention_core import dot_product_attention
from kerastrain.model.embeddings import segment_attention_mask

B, T, N, H = 2, 24, 3, 8


def _qkv(seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(B, T, N, H)), dtype) for _ in range(3)]


def _segment_mask():
    segments = np.array([[0] * 7 + [1] * 10 + [2] * 7, [0] * 20 + [1] * 4])
    return segment_attention_mask(jnp.asarray(segments)) & jnp.tril(jnp.ones((T, T), bool))


CASES = {
    "causal": {"is_causal": True},
    "packed": {"mask": "segments"},
    "packed, scaled": {"mask": "segments", "scale": 0.3},
}


def _kwargs(case):
    kwargs = dict(CASES[case])
    if kwargs.get("mask") == "segments":
        kwargs["mask"] = _segment_mask()
    return kwargs


@pytest.mark.parametrize("case", CASES)
def test_forward_is_what_keras_computes(case):
    q, k, v = _qkv()
    kwargs = _kwargs(case)
    ours = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, **kwargs))(q, k, v)
    theirs = jax.jit(lambda q, k, v: keras.ops.dot_product_attention(q, k, v, **kwargs))(q, k, v)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize("case", CASES)
def test_gradients_equal_autodiff(case):
    q, k, v = _qkv(1)
    kwargs = _kwargs(case)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=(B, T, N, H)), jnp.float32)

    def loss(attend):
        return lambda q, k, v: jnp.sum(jnp.tanh(attend(q, k, v)) * weights)

    ours = jax.jit(jax.grad(loss(lambda q, k, v: dot_product_attention(q, k, v, **kwargs)),
                            argnums=(0, 1, 2)))(q, k, v)
    theirs = jax.jit(jax.grad(loss(lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, implementation="xla", **kwargs)), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_bfloat16_gradients_close_to_autodiff():
    q, k, v = _qkv(3, "bfloat16")

    def grads(attend):
        f = lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)  # noqa: E731
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, v)

    ours = grads(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True))
    theirs = grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                                implementation="xla"))
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=0.05, atol=0.05)


def _temporaries(attend, layers=4, t=128):
    """XLA's temporary bytes for the gradient of ``layers`` stacked attention layers."""
    x = jnp.zeros((B, t, N * H), jnp.float32)
    w = jnp.full((layers, N * H, 3 * N * H), 0.01, jnp.float32)

    def loss(w, x):
        for i in range(layers):
            q, k, v = jnp.split(x @ w[i], 3, axis=-1)
            shape = (B, t, N, H)
            x = x + attend(q.reshape(shape), k.reshape(shape), v.reshape(shape)).reshape(x.shape)
        return jnp.sum(x ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(w, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_backward_keeps_no_probabilities_per_layer():
    t = 128
    probabilities = B * N * t * t * 4  # one layer's float32 (seq x seq) array

    def growth(attend):  # temporaries that 4 more layers add
        return _temporaries(attend, 6, t) - _temporaries(attend, 2, t)

    ours = growth(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True))
    autodiff = growth(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                                   implementation="xla"))
    # Autodiff keeps at least one per layer until the backward pass reaches it; ours keeps
    # only the layer's (seq x head_dim) arrays, and the probabilities of the layer being
    # differentiated, whatever the depth.
    assert autodiff >= 4 * probabilities
    assert ours < 4 * probabilities / 2


def test_training_steps_lose_what_keras_attention_loses(monkeypatch):
    """Three training steps of a small GPT (packed rows too): the same losses as with
    ``keras.ops.dot_product_attention`` and autodiff, to float rounding."""
    from kerastrain.config import ModelConfig, RunConfig, TrainConfig
    from kerastrain.model import attention
    from kerastrain.model.gpt import build_model
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import initial_state, make_steps

    rng = np.random.default_rng(0)
    x = rng.integers(0, 97, (4, 32)).astype("int32")
    segments = np.repeat(np.arange(4)[None], 4, 0).repeat(8, 1).astype("int32")

    def losses(segmented):
        cfg = RunConfig(model=ModelConfig(vocab_size=97, d_model=32, num_layers=2, num_heads=4,
                                          d_ff=64, seq_len=32, dropout_rate=0.0),
                        train=TrainConfig(batch_size=4))
        keras.utils.set_random_seed(0)
        model = build_model(cfg.model)
        optimizer = make_optimizer(cfg, 1e-2, model)
        step, _ = make_steps(model, optimizer, segmented=segmented)
        state = initial_state(model, optimizer)
        counts = np.full((4,), 32, np.int32)
        out = []
        for _ in range(3):
            loss, state = step(state, x, x, counts, *((segments,) if segmented else ()))
            out.append(float(loss[0]))
        return out

    for segmented in (False, True):
        ours = losses(segmented)
        monkeypatch.setattr(attention, "_dot_product_attention",
                            lambda q, k, v, **kw: keras.ops.dot_product_attention(q, k, v, **kw))
        theirs = losses(segmented)
        monkeypatch.undo()
        assert ours[0] == theirs[0]  # the same forward
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
        assert ours[2] < ours[0]
