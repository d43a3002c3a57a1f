"""The chunked, fused loss gives the loss and gradients of the plain full-logits loss."""

import jax
import keras
import numpy as np
import pytest

from kerastrain.config import ModelConfig
from kerastrain.model.gpt import build_model
from kerastrain.training.loss import chunk_tokens_for, chunked_eval_loss, chunked_lm_loss
from kerastrain.training.steps import lm_loss

# Gemma 2's switches: the final-logit soft-cap runs inside the fused loss and its gradient.
GEMMA2 = dict(final_softcap=3.0, attn_softcap=5.0, scale_embeddings=True, post_norms=True,
              glu_activation="gelu_tanh", sliding_window=6, sliding_window_pattern=2)


@pytest.mark.parametrize("tied,chunk,switches", [(True, 10, {}), (False, 48, {}), (True, 10, GEMMA2)])
def test_same_loss_gradients_and_dropout_state_as_full_logits(tied, chunk, switches):
    cfg = ModelConfig(vocab_size=97, seq_len=16, d_model=32, num_layers=2, num_heads=2, d_ff=64,
                      dropout_rate=0.1, tie_embeddings=tied, **switches)
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 97, (3, 16)).astype("int32") for _ in range(2))

    def full(t):
        logits, state = model.stateless_call(t, frozen, x, training=True)
        return lm_loss(y, logits), state

    def chunked(t):
        return chunked_lm_loss(model, t, frozen, x, y, training=True, chunk_tokens=chunk)

    (l1, s1), g1 = jax.jit(jax.value_and_grad(full, has_aux=True))(trainable)
    (l2, s2), g2 = jax.jit(jax.value_and_grad(chunked, has_aux=True))(trainable)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(s1, s2, strict=True):  # dropout's RNG advanced the same way
        np.testing.assert_array_equal(a, b)
    total, count = chunked_eval_loss(model, trainable, frozen, x, y, chunk_tokens=chunk)
    logits, _ = model.stateless_call(trainable, frozen, x, training=False)
    np.testing.assert_allclose(total / count, lm_loss(y, logits), rtol=1e-6)


def test_chunk_keeps_logits_bounded():
    assert chunk_tokens_for(16000, 32 * 256) == 262  # 16 MB of float32 logits, not 524 MB
    assert chunk_tokens_for(97, 48) == 48


def test_z_loss_matches_a_direct_full_logits_computation():
    """--z-loss: the chunked loss and its gradients equal cross-entropy + w * mean(logsumexp^2)
    computed on the full logits (w large enough to matter: 0.05)."""
    cfg = ModelConfig(vocab_size=97, seq_len=16, d_model=32, num_layers=1, num_heads=2, d_ff=64)
    keras.utils.set_random_seed(1)
    model = build_model(cfg)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    rng = np.random.default_rng(1)
    x, y = (rng.integers(0, 97, (3, 16)).astype("int32") for _ in range(2))

    def full(t):
        logits, _ = model.stateless_call(t, frozen, x, training=True)
        lse = jax.nn.logsumexp(logits.astype("float32"), axis=-1)
        return lm_loss(y, logits) + 0.05 * (lse ** 2).mean()

    def chunked(t):
        return chunked_lm_loss(model, t, frozen, x, y, chunk_tokens=10, z_loss=0.05)[0]

    def plain(t):
        return chunked_lm_loss(model, t, frozen, x, y, chunk_tokens=10)[0]

    l1, g1 = jax.jit(jax.value_and_grad(full))(trainable)
    l2, g2 = jax.jit(jax.value_and_grad(chunked))(trainable)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    assert float(l2) > float(jax.jit(plain)(trainable)) + 0.01  # the term is really there
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
