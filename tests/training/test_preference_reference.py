"""With LoRA, DPO's reference is the base model: the same weights with every adapter's B matrix
zeroed in the step. Its log-probs equal those of the base model loaded alone."""

from __future__ import annotations

import keras
import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.model.gpt import build_model
from kerastrain.model.lora import apply_lora, lora_layers
from kerastrain.training.preference_loss import reference_weights, side_logps
from kerastrain.training.steps import initial_state
from tests.training.test_preference_loss import _packed, _pairs

CONFIG = ModelConfig(vocab_size=61, seq_len=32, d_model=32, num_layers=2, num_heads=2, d_ff=64,
                     dropout_rate=0.0)


def test_the_lora_reference_is_the_base_model_alone():
    keras.utils.set_random_seed(1)
    base = build_model(CONFIG)
    tuned = build_model(CONFIG)
    tuned.set_weights(base.get_weights())  # the base weights, loaded
    apply_lora(tuned, 4)
    rng = np.random.default_rng(0)
    for layer in lora_layers(tuned, enabled=True):  # adapters that change the model
        b = layer.lora_kernel_b
        b.assign(0.1 * rng.standard_normal(b.shape).astype("float32"))
    x, y, s = _packed(_pairs(6, seed=2))
    trainable, non_trainable, _ = initial_state(tuned, keras.optimizers.SGD(0.1))
    reference, valid, _ = side_logps(tuned, reference_weights(tuned, trainable, None),
                                     non_trainable, x, y, s)
    base_state = initial_state(base, keras.optimizers.SGD(0.1))
    alone, valid_alone, _ = side_logps(base, base_state[0], base_state[1], x, y, s)
    policy, _, _ = side_logps(tuned, trainable, non_trainable, x, y, s)
    assert np.array_equal(valid, valid_alone) and int(valid.sum()) == 6
    for side in ("chosen", "rejected"):
        np.testing.assert_allclose(getattr(reference, side)[valid],
                                   getattr(alone, side)[valid_alone], rtol=1e-6)
        # The adapters do change the policy: the reference is not the policy.
        assert np.abs(getattr(policy, side) - getattr(reference, side))[valid].max() > 1e-3


def test_the_planner_counts_the_frozen_reference():
    from kerastrain.config import RunConfig, TrainConfig
    from kerastrain.model.presets import count_parameters
    from kerastrain.training.planner import plan_memory

    lora = CONFIG.replace(use_lora=True, lora_rank=4)

    def weights(objective, model=CONFIG):
        return plan_memory(RunConfig(model=model, train=TrainConfig(objective=objective))).weights

    assert weights("dpo") - weights("sft") == 4 * count_parameters(CONFIG)
    assert weights("simpo") == weights("orpo") == weights("sft")  # no reference
    assert weights("dpo", lora) == weights("sft", lora)  # the base model, adapters off
