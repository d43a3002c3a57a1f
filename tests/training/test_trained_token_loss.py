"""The update's loss and gradient are the mean over all its trained tokens: k micro-batches with
unequal loss masks train exactly as one batch holding them all (not a mean of means)."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.model.gpt import build_model
from kerastrain.training.steps import initial_state, make_steps, update_counts


def _update(x, y, micro_batches: int):
    keras.utils.set_random_seed(5)
    model = build_model(ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=1,
                                    num_heads=2, d_ff=64, dropout_rate=0.0))
    # Plain SGD: the update is the gradient itself (Adam's first step would hide its scale).
    optimizer = keras.optimizers.SGD(1.0, gradient_accumulation_steps=micro_batches
                                     if micro_batches > 1 else None)
    optimizer.build(model.trainable_variables)
    train_step, _ = make_steps(model, optimizer)
    state = initial_state(model, optimizer)
    before = [np.asarray(v) for v in state[0]]
    rows = len(x) // micro_batches
    micro = [SimpleNamespace(inputs=x[i:i + rows], labels=y[i:i + rows])
             for i in range(0, len(x), rows)]
    counts = update_counts(micro)
    loss = 0.0
    for batch in micro:
        out, state = train_step(state, batch.inputs, batch.labels, counts)
        loss += float(out[0])
        tokens = float(out[1])
    delta = [np.asarray(v) - b for v, b in zip(state[0], before, strict=True)]
    return loss, tokens, delta


def test_micro_batches_with_unequal_masks_give_the_big_batchs_loss_and_gradient():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 64, (4, 16)).astype("int32")
    y = rng.integers(0, 64, (4, 16)).astype("int32")
    y[:2, :13] = -1  # the first micro-batch trains 6 tokens, the second 32
    loss, tokens, delta = _update(x, y, 1)
    accumulated_loss, accumulated_tokens, accumulated_delta = _update(x, y, 2)
    assert tokens == accumulated_tokens == 38
    np.testing.assert_allclose(accumulated_loss, loss, rtol=1e-5)
    for a, b in zip(accumulated_delta, delta, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert max(np.abs(d).max() for d in delta) > 1e-4  # it did update
    # A mean of the two micro-batches' means would be another number.
    first, _, _ = _update(x[:2], y[:2], 1)
    second, _, _ = _update(x[2:], y[2:], 1)
    assert abs((first + second) / 2 - loss) > 0.01
