"""Preference losses on packed rows equal the same losses computed one sequence per row, padded,
with the model's full logits and TRL's formulas written out here; DPO starts at log 2 with the
gradient its derivative gives; k micro-batches train exactly as one batch of their pairs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from kerastrain.config import ModelConfig, TrainConfig
from kerastrain.model.gpt import build_model
from kerastrain.training.objectives import choose_objective
from kerastrain.training.preference_loss import pair_counts, pair_sums
from kerastrain.training.steps import initial_state, make_steps

SEQ = 32
VOCAB = 61


def _model(seed=3):
    keras.utils.set_random_seed(seed)
    return build_model(ModelConfig(vocab_size=VOCAB, seq_len=SEQ, d_model=32, num_layers=2,
                                   num_heads=2, d_ff=64, dropout_rate=0.0))


def _pairs(n, seed=0):
    """(prompt, chosen reply, rejected reply) token lists of uneven lengths."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        p, c, r = (int(rng.integers(1, 6)), int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        pairs.append(tuple(rng.integers(0, VOCAB, k).tolist() for k in (p, c, r)))
    return pairs


def _side(prompt, reply):
    """(inputs, labels) of one sequence: the prompt's next tokens are not trained."""
    ids = prompt + reply
    labels = [-1] * (len(prompt) - 1) + reply
    return ids[:-1], labels


def _packed(pairs, rows=None):
    """Rows holding the pairs in order, pair k of a row as segments 2k+1, 2k+2 (written here,
    independently of the pair packer)."""
    out, row = [], ([], [], [])

    def flush():
        nonlocal row
        pad = SEQ - len(row[0])
        out.append((row[0] + [0] * pad, row[1] + [-1] * pad, row[2] + [0] * pad))
        row = ([], [], [])

    for prompt, chosen, rejected in pairs:
        sides = [_side(prompt, chosen), _side(prompt, rejected)]
        if len(row[0]) + sum(len(x) for x, _ in sides) > SEQ:
            flush()
        seg = (row[2][-1] if row[2] else 0) + 1
        for k, (x, y) in enumerate(sides):
            row[0].extend(x)
            row[1].extend(y)
            row[2].extend([seg + k] * len(x))
    flush()
    while rows is not None and len(out) < rows:
        out.append(([0] * SEQ, [-1] * SEQ, [0] * SEQ))
    x, y, s = (np.asarray([r[i] for r in out], np.int32) for i in range(3))
    return x, y, s


def _seq_logps(model, trainable, non_trainable, sequences):
    """Each sequence alone in a row, padded, no segment ids: the log-prob sum of its trained
    labels and their count, from the model's full logits."""
    width = max(len(x) for x, _ in sequences)
    x = np.asarray([s + [0] * (width - len(s)) for s, _ in sequences], np.int32)
    y = np.asarray([t + [-1] * (width - len(t)) for _, t in sequences], np.int32)
    logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, jnp.maximum(y, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(y >= 0, picked, 0.0), axis=1), jnp.sum(y >= 0, axis=1)


def _trl_loss(name, beta, gamma, ls, pc, pr, nc, nr, rc=None, rr=None):
    """TRL's formulas (DPOTrainer sigmoid, CPOTrainer simpo, ORPOTrainer), batch means."""
    logsig = jax.nn.log_sigmoid
    if name == "dpo":
        z = (pc - pr) - (rc - rr)
        return jnp.mean(-logsig(beta * z) * (1 - ls) - logsig(-beta * z) * ls)
    ac, ar = pc / nc, pr / nr
    if name == "simpo":
        z = (ac - ar) - gamma / beta
        return jnp.mean(-logsig(beta * z) * (1 - ls) - logsig(-beta * z) * ls)
    log_odds = (ac - ar) - (jnp.log1p(-jnp.exp(ac)) - jnp.log1p(-jnp.exp(ar)))
    nll = -jnp.sum(pc) / jnp.sum(nc)  # cross-entropy over every chosen token of the batch
    return nll - jnp.mean(beta * logsig(log_odds))


def _unpacked_loss(model, name, train, pairs, reference):
    def loss(trainable, non_trainable):
        chosen = [_side(p, c) for p, c, _ in pairs]
        rejected = [_side(p, r) for p, _, r in pairs]
        pc, nc = _seq_logps(model, trainable, non_trainable, chosen)
        pr, nr = _seq_logps(model, trainable, non_trainable, rejected)
        rc, _ = _seq_logps(model, reference, non_trainable, chosen)
        rr, _ = _seq_logps(model, reference, non_trainable, rejected)
        return _trl_loss(name, train.beta, train.gamma, train.label_smoothing, pc, pr, nc, nr,
                         jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr))
    return loss


def _packed_loss(model, name, train, rows, reference):
    objective = choose_objective(name)
    x, y, s = rows

    def loss(trainable, non_trainable):
        sums, _, _ = pair_sums(model, objective, train, trainable, non_trainable, x, y, s,
                               frozen=reference, chunk=7)  # chunks cut across rows and pairs
        return sums[2] / sums[0] + sums[3] / sums[1]
    return loss


def _perturbed(values, seed):
    rng = np.random.default_rng(seed)
    return [v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for v in values]


def _assert_close(a, b, rtol=1e-6):
    """Relative to the array's scale (float32 sums in another order differ in the last bits)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.abs(a - b).max() <= rtol * max(np.abs(b).max(), 1e-30), (a, b)


@pytest.mark.parametrize("name", ["dpo", "simpo", "orpo"])
def test_packed_loss_and_gradients_equal_one_sequence_per_row(name):
    model = _model()
    train = TrainConfig(beta=0.5, gamma=0.3, label_smoothing=0.1)
    state = initial_state(model, keras.optimizers.SGD(0.1))
    reference = [jnp.asarray(v) for v in state[0]]
    policy = [jnp.asarray(v) for v in _perturbed(state[0], 1)]  # not the reference
    pairs = _pairs(9)
    rows = _packed(pairs)
    assert rows[0].shape[0] < len(pairs)  # several pairs share rows
    packed = jax.value_and_grad(_packed_loss(model, name, train, rows, reference))
    unpacked = jax.value_and_grad(_unpacked_loss(model, name, train, pairs, reference))
    value, grads = packed(policy, state[1])
    expected, expected_grads = unpacked(policy, state[1])
    assert abs(float(value) - float(expected)) <= 1e-6 * abs(float(expected))
    for g, e in zip(grads, expected_grads, strict=True):
        _assert_close(g, e)
    assert max(float(jnp.abs(g).max()) for g in grads) > 1e-4


def test_dpo_starts_at_log_2_with_the_hand_computed_gradient():
    model = _model(4)
    beta = 0.2
    train = TrainConfig(beta=beta)
    state = initial_state(model, keras.optimizers.SGD(0.1))
    weights = [jnp.asarray(v) for v in state[0]]
    pairs = _pairs(2, seed=5)
    value, grads = jax.value_and_grad(_packed_loss(model, "dpo", train, _packed(pairs),
                                                   weights))(weights, state[1])
    assert float(value) == pytest.approx(math.log(2), abs=1e-7)
    # d/dθ of -log σ(β z) at z = 0 is -β/2 dz/dθ; averaged over the 2 pairs:
    # -(β/4) Σ_pairs (∇ log π(chosen) - ∇ log π(rejected)).
    hand = [jnp.zeros_like(w) for w in weights]
    for prompt, chosen, rejected in pairs:
        for reply, sign in ((chosen, 1.0), (rejected, -1.0)):
            g = jax.grad(lambda t, p=prompt, r=reply: _seq_logps(model, t, state[1],
                                                                 [_side(p, r)])[0][0])(weights)
            hand = [h - sign * beta / 4 * gi for h, gi in zip(hand, g, strict=True)]
    for g, h in zip(grads, hand, strict=True):
        _assert_close(g, h)


def test_dpo_as_beta_goes_to_0():
    """Loss → log 2 - (β/2) mean z, and gradient / β → -(1/2) mean ∇z (first order in β)."""
    model = _model(6)
    state = initial_state(model, keras.optimizers.SGD(0.1))
    reference = [jnp.asarray(v) for v in state[0]]
    policy = [jnp.asarray(v) for v in _perturbed(state[0], 2)]
    pairs = _pairs(4, seed=8)
    rows = _packed(pairs)
    beta = 1e-4
    value = _packed_loss(model, "dpo", TrainConfig(beta=beta), rows, reference)(policy, state[1])
    chosen = [_side(p, c) for p, c, _ in pairs]
    rejected = [_side(p, r) for p, _, r in pairs]

    def mean_z(t):
        pc, _ = _seq_logps(model, t, state[1], chosen)
        pr, _ = _seq_logps(model, t, state[1], rejected)
        rc, _ = _seq_logps(model, reference, state[1], chosen)
        rr, _ = _seq_logps(model, reference, state[1], rejected)
        return jnp.mean((pc - pr) - (rc - rr))

    z = float(mean_z(policy))
    assert abs(z) > 0.01
    assert float(value) == pytest.approx(math.log(2) - beta / 2 * z, abs=1e-6)


def _train_update(rows, micro_batches, name="dpo"):
    model = _model(9)
    optimizer = keras.optimizers.SGD(1.0, gradient_accumulation_steps=micro_batches
                                     if micro_batches > 1 else None)
    optimizer.build(model.trainable_variables)
    frozen = [jnp.asarray(v.value) for v in model.trainable_variables]
    train = TrainConfig(beta=0.5)
    state = initial_state(model, optimizer)
    state = (_perturbed(state[0], 3), state[1], state[2])  # policy ≠ reference
    before = [np.asarray(v) for v in state[0]]
    train_step, _ = make_steps(model, optimizer, segmented=True, objective=choose_objective(name),
                               train=train, frozen=frozen)
    x, y, s = rows
    n = len(x) // micro_batches
    micro = [SimpleNamespace(inputs=x[i:i + n], labels=y[i:i + n], segments=s[i:i + n])
             for i in range(0, len(x), n)]
    counts = pair_counts(micro)
    loss, metrics = 0.0, 0.0
    for batch in micro:
        out, state = train_step(state, batch.inputs, batch.labels, counts, batch.segments)
        loss += float(out[0])
        metrics = metrics + np.asarray(out[2:])
    return loss, metrics, [np.asarray(v) - b for v, b in zip(state[0], before, strict=True)]


@pytest.mark.parametrize("name", ["dpo", "orpo"])
def test_accumulation_4_x_2_rows_equals_1_x_8_rows(name):
    # One pair per row, most rows, and the rest packed: micro-batches of unequal pair counts.
    pairs = _pairs(12, seed=11)
    rows = [_packed([p]) for p in pairs[:6]] + [_packed(pairs[6:])]
    rows = tuple(np.concatenate([r[i] for r in rows])[:8] for i in range(3))
    per_row = pair_counts([SimpleNamespace(labels=rows[1], segments=rows[2])])[:, 0]
    assert len(per_row) == 8 and per_row.max() > 1  # rows of 1 pair and rows of several
    loss, metrics, delta = _train_update(rows, 1, name)
    acc_loss, acc_metrics, acc_delta = _train_update(rows, 4, name)
    assert acc_loss == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(acc_metrics, metrics, rtol=1e-5, atol=1e-7)
    for a, b in zip(acc_delta, delta, strict=True):
        _assert_close(a, b, rtol=1e-5)
    assert max(np.abs(d).max() for d in delta) > 1e-5
