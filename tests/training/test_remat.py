"""--remat: the same loss, gradients and dropout as without it; blocks are checkpointed."""

import jax
import keras
import numpy as np

from kerastrain.config import ModelConfig, RunConfig, TrainConfig
from kerastrain.model.gpt import build_model
from kerastrain.training.loss import chunked_lm_loss
from kerastrain.training.planner import plan_memory


def test_remat_gives_the_same_loss_gradients_and_dropout_state():
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 97, (3, 16)).astype("int32") for _ in range(2))
    results = []
    for remat in (False, True):
        cfg = ModelConfig(vocab_size=97, seq_len=16, d_model=32, num_layers=2, num_heads=2,
                          d_ff=64, dropout_rate=0.1, remat=remat)
        keras.utils.set_random_seed(0)
        model = build_model(cfg)
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(t, model=model, frozen=frozen):
            return chunked_lm_loss(model, t, frozen, x, y, training=True)

        grad = jax.value_and_grad(loss, has_aux=True)
        jaxpr = str(jax.make_jaxpr(grad)(trainable))
        assert jaxpr.count("remat") >= (2 if remat else 0) and (remat or "remat" not in jaxpr)
        results.append(jax.jit(grad)(trainable))
    (l1, s1), g1 = results[0]
    (l2, s2), g2 = results[1]
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(s1, s2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_planner_counts_remat():
    from kerastrain.model.presets import preset_config

    plain = plan_memory(RunConfig(model=preset_config("small"), train=TrainConfig(batch_size=8)))
    remat = plan_memory(RunConfig(model=preset_config("small", remat=True),
                                  train=TrainConfig(batch_size=8)))
    assert remat.activations < plain.activations / 2 and remat.weights == plain.weights
