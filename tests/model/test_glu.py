"""SwiGLU's product with its lean backward: Keras' forward bit for bit, autodiff's gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np

from kerastrain.model.glu import silu_glu


def test_silu_glu_forward_and_gradients_match_keras_and_autodiff():
    rng = np.random.default_rng(0)
    g, u, w = (jnp.asarray(rng.normal(size=(3, 5, 16)) * 3, jnp.float32) for _ in range(3))
    plain = lambda g, u: keras.activations.silu(g) * u  # noqa: E731
    np.testing.assert_array_equal(np.asarray(jax.jit(silu_glu)(g, u)),
                                  np.asarray(jax.jit(plain)(g, u)))

    def grads(fn):
        return jax.jit(jax.grad(lambda g, u: jnp.sum(jnp.sin(fn(g, u)) * w), argnums=(0, 1)))(g, u)

    for ours, theirs in zip(grads(silu_glu), grads(plain), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
