"""Document masking in the model: a packed row's logits equal those of each example run alone,
with rotary and with learned positions (positions restart at each example)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerastrain.config import ModelConfig
from kerastrain.model.gpt import build_model


@pytest.mark.parametrize("use_rope", [True, False])
def test_packed_row_logits_equal_each_example_alone(use_rope):
    cfg = ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=2, num_heads=2, d_ff=64,
                      use_rope=use_rope, dropout_rate=0.0)
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    examples = [rng.integers(0, 64, n).astype("int32") for n in (5, 7, 3)]
    row = np.concatenate([*examples, np.zeros(1, "int32")])[None]  # 15 tokens + 1 of padding
    segments = np.concatenate([np.full(len(e), i + 1) for i, e in enumerate(examples)]
                              + [np.zeros(1)]).astype("int32")[None]
    packed = np.asarray(model(row, segment_ids=segments))[0]
    start = 0
    for example in examples:
        alone = np.asarray(model(example[None]))[0]
        np.testing.assert_allclose(packed[start:start + len(example)], alone, atol=1e-5)
        start += len(example)
    # Without segment ids the later examples see the earlier ones: the logits differ.
    plain = np.asarray(model(row))[0]
    assert np.abs(plain[5:12] - packed[5:12]).max() > 1e-3


def test_the_training_loss_path_takes_segment_ids():
    """The chunked loss (a sub-model of the GPT's layers) masks exactly as the model does."""
    from kerastrain.training.loss import chunked_eval_loss

    cfg = ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=1, num_heads=2, d_ff=64,
                      dropout_rate=0.0)
    keras.utils.set_random_seed(1)
    model = build_model(cfg)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 64, 9).astype("int32"), rng.integers(0, 64, 7).astype("int32")
    x = np.concatenate([a[:-1], b[:-1]])[None]
    y = np.concatenate([a[1:], b[1:]])[None]
    segments = np.asarray([[1] * 8 + [2] * 6], "int32")
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables])
    total, count = chunked_eval_loss(model, *state, x, y, segment_ids=segments)
    alone = [chunked_eval_loss(model, *state, e[None, :-1], e[None, 1:]) for e in (a, b)]
    assert int(count) == 14
    np.testing.assert_allclose(float(total), sum(float(s) for s, _ in alone), rtol=1e-5)
