"""Preference losses on packed rows: many chosen / rejected pairs per row, each side its own
segment.

The packer (:mod:`kerastrain.data.packing`) gives the ``k``-th pair of a row the
segment ids ``2k + 1`` (chosen) and ``2k + 2`` (rejected); attention never crosses a segment and
positions restart at each (:mod:`kerastrain.model.embeddings`), so each side is scored exactly as
if it were alone in a row. A side's log-prob is the sum of its trained tokens' log-probs (the
reply: labels ``>= 0``), taken with ``segment_sum`` over ``row * (seq_len + 1) + segment``, so no
side is ever padded to another's length.

The update's loss is over its pairs, not a mean of micro-batch means: ``counts`` holds per row
``[pairs, chosen trained tokens, trained tokens]`` summed over the update's micro-batches
(:func:`pair_counts`), and each micro-batch's part is its pairs' loss sum over the update's pairs
(ORPO's NLL: over the update's chosen tokens), as :func:`kerastrain.training.steps.make_steps`
does for tokens.

Per-token log-probs are computed a chunk of tokens at a time; the chunk's logits are recomputed
in the backward pass (``jax.checkpoint``) rather than kept, so at most one chunk's logits are
alive, as in :mod:`kerastrain.training.loss`.

The reference model (DPO): with LoRA, the same weights with every adapter's ``B`` matrix set to
zero, in the same step (the base model: ``kernel + A @ 0``), as TRL does with PEFT's
``disable_adapter``; no second copy of the weights. With full fine-tuning, the ``--init-from``
weights held frozen on the device beside the trained ones (``reference`` values handed to
:func:`make_pair_steps`). Held rather than precomputed: precomputed log-probs would have to
travel with every pair through the shuffle buffers, the packer and the saved data position,
and be recomputed whenever ``--seq-len`` truncation changes a pair; a frozen copy costs one
set of weights (no gradients or optimizer state: a quarter of AdamW's training memory) and one
forward pass per step, and is exact for any data order.

Policy and reference run without dropout (TRL's ``disable_dropout=True``), so at the first step
the policy equals the reference and DPO's loss is ``log 2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kerastrain.training.loss import _chunks, chunk_tokens_for, hidden_and_head
from kerastrain.training.objectives import PAIR_METRICS, PairLogps

PAIRS, CHOSEN_TOKENS, TRAINED_TOKENS = range(3)  # the columns of ``counts``


def token_logps(hidden, kernel, labels, chunk: int, softcap=None):
    """(rows, seq) float32 log-prob of each label given its prefix; 0 where the label is < 0."""
    hs, ys = _chunks(hidden, labels, chunk)
    k32 = kernel.astype(jnp.float32)

    @jax.checkpoint
    def one(hc, yc):
        logits = jnp.dot(hc.astype(jnp.float32), k32)
        if softcap is not None:
            logits = jnp.tanh(logits / softcap) * softcap
        picked = jnp.take_along_axis(logits, jnp.maximum(yc, 0)[:, None], axis=-1)[:, 0]
        return jnp.where(yc >= 0, picked - jax.nn.logsumexp(logits, axis=-1), 0.0)

    _, out = jax.lax.scan(lambda carry, xs: (carry, one(*xs)), None, (hs, ys))
    rows, seq = labels.shape
    return out.reshape(-1)[: rows * seq].reshape(rows, seq)


def pair_logps(logps, labels, segments) -> tuple[PairLogps, jnp.ndarray]:
    """Each pair slot's chosen and rejected log-prob sums and token counts (flat, ``rows *
    (seq_len // 2)`` slots), and which slots hold a pair (both sides trained). Empty slots hold
    harmless values (sum -1 over 1 token) so no NaN reaches a gradient."""
    rows, seq = labels.shape
    trained = labels >= 0
    ids = (jnp.arange(rows, dtype=jnp.int32)[:, None] * (seq + 1) + segments).reshape(-1)
    size = rows * (seq + 1)
    sums = jax.ops.segment_sum(jnp.where(trained, logps, 0.0).reshape(-1), ids, size)
    counts = jax.ops.segment_sum(trained.reshape(-1).astype(jnp.float32), ids, size)
    sums, counts = sums.reshape(rows, seq + 1), counts.reshape(rows, seq + 1)
    half = seq // 2
    chosen, rejected = sums[:, 1:2 * half:2].reshape(-1), sums[:, 2:2 * half + 1:2].reshape(-1)
    n_chosen = counts[:, 1:2 * half:2].reshape(-1)
    n_rejected = counts[:, 2:2 * half + 1:2].reshape(-1)
    valid = (n_chosen > 0) & (n_rejected > 0)
    safe = PairLogps(jnp.where(valid, chosen, -1.0), jnp.where(valid, rejected, -1.0),
                     jnp.where(valid, n_chosen, 1.0), jnp.where(valid, n_rejected, 1.0))
    return safe, valid


def pair_counts(micro: list) -> np.ndarray:
    """Per row, ``[pairs, chosen trained tokens, trained tokens]`` of the update's micro-batches
    added up (the ``counts`` the pair steps take)."""
    total = 0
    for batch in micro:
        labels, segments = np.asarray(batch.labels), np.asarray(batch.segments)
        trained = labels >= 0
        rows, seq = labels.shape
        per_segment = np.zeros((rows, seq + 1), np.int64)
        np.add.at(per_segment, (np.arange(rows)[:, None], segments), trained)
        half = seq // 2
        chosen, rejected = per_segment[:, 1:2 * half:2], per_segment[:, 2:2 * half + 1:2]
        pairs = ((chosen > 0) & (rejected > 0)).sum(axis=1)
        total = total + np.stack([pairs, (chosen * (rejected > 0)).sum(axis=1),
                                  trained.sum(axis=1)], axis=1).astype(np.int32)
    return total


def reference_weights(model, trainable, frozen):
    """The reference model's trainable values: ``frozen`` (full fine-tuning), or, with LoRA
    (``frozen`` None), ``trainable`` with each adapter's B matrix zeroed: the base model."""
    if frozen is not None:
        return [jax.lax.stop_gradient(v) for v in frozen]
    names = [v.path for v in model.trainable_variables]
    if not any(n.endswith("lora_kernel_b") for n in names):
        raise ValueError("a reference from adapters needs LoRA (--use-lora) or frozen weights")
    return [jnp.zeros_like(v) if n.endswith("lora_kernel_b") else jax.lax.stop_gradient(v)
            for n, v in zip(names, trainable, strict=True)]


def frozen_reference_weights(model) -> list:
    """A copy of the model's trainable values (the training step donates the originals)."""
    return [jnp.array(v.value, copy=True) for v in model.trainable_variables]


def side_logps(model, trainable, non_trainable, x, y, segments, chunk=None):
    """(PairLogps, valid pairs, updated non-trainable values) of the model at these values."""
    hidden, kernel, non_trainable = hidden_and_head(model, trainable, non_trainable, x, False,
                                                    segments)
    chunk = chunk or chunk_tokens_for(kernel.shape[-1], y.shape[0] * y.shape[1])
    logps = token_logps(hidden, kernel, y, chunk, model.config.final_softcap)
    policy, valid = pair_logps(logps, y, segments)
    return policy, valid, non_trainable


def pair_sums(model, objective, train, trainable, non_trainable, x, y, segments, frozen=None,
              chunk=None):
    """Sums over this batch's pairs: ``[pairs, chosen trained tokens, loss sum, NLL sum]`` (the
    NLL: ORPO's weighted chosen-token NLL, else 0), the metric sums (:func:`metric_names`), and
    the updated non-trainable values."""
    policy, valid, non_trainable = side_logps(model, trainable, non_trainable, x, y, segments,
                                              chunk)
    reference = None
    if objective.reference:
        ref_values = reference_weights(model, trainable, frozen)
        reference, _, _ = side_logps(model, ref_values, non_trainable, x, y, segments, chunk)
        stop = jax.lax.stop_gradient
        reference = PairLogps(stop(reference.chosen), stop(reference.rejected),
                              reference.chosen_tokens, reference.rejected_tokens)
    out = objective.pair_loss(policy, reference, train)

    def total(values):
        return jnp.sum(jnp.where(valid, values, 0.0))

    nll = out.nll_weight * -total(policy.chosen) if out.nll_weight else jnp.float32(0.0)
    sums = jnp.stack([total(valid.astype(jnp.float32)), total(policy.chosen_tokens),
                      total(out.losses), nll])
    metrics = [out.chosen_rewards, out.rejected_rewards,
               (out.chosen_rewards > out.rejected_rewards).astype(jnp.float32),
               out.chosen_rewards - out.rejected_rewards, out.logps.chosen, out.logps.rejected]
    metrics += [out.metrics[name] for name in objective.metric_names]
    return sums, jnp.stack([total(jax.lax.stop_gradient(m)) for m in metrics]), non_trainable


def metric_names(objective) -> tuple[str, ...]:
    """The names of the values a pair step returns after the loss and trained tokens."""
    return (*PAIR_METRICS, *objective.metric_names)


def make_pair_train_step(model, optimizer, objective, train):
    """``train_step(state, x, y, counts, segments, frozen=None)`` of a preference objective,
    returning ``([loss part, trained tokens, *metric parts], state)`` (not jitted). ``frozen``:
    the reference weights of full fine-tuning (None with LoRA or no reference)."""
    scale = optimizer.gradient_accumulation_steps or 1

    def loss_fn(trainable, non_trainable, x, y, counts, segments, frozen):
        totals = jnp.maximum(jnp.sum(counts, axis=0), 1).astype(jnp.float32)
        sums, metrics, non_trainable = pair_sums(model, objective, train, trainable,
                                                 non_trainable, x, y, segments, frozen)
        # The update's mean over its pairs (ORPO's NLL: over its chosen tokens).
        part = sums[2] / totals[PAIRS] + sums[3] / totals[CHOSEN_TOKENS]
        # Keras averages the k micro-gradients: each is taken of k times the part.
        return part * scale, (part, metrics / totals[PAIRS], totals[TRAINED_TOKENS],
                              non_trainable)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, x, y, counts, segments, frozen=None):
        trainable, non_trainable, opt_vars = state
        (_, (part, metrics, tokens, non_trainable)), grads = grad_fn(
            trainable, non_trainable, x, y, counts, segments, frozen)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (jnp.concatenate([jnp.stack([part, tokens]), metrics]),
                (trainable, non_trainable, opt_vars))

    return train_step


def make_pair_eval_step(model, objective, train):
    """``eval_step(trainable, non_trainable, x, y, segments, frozen=None)``: the batch's
    ``[pairs, chosen tokens, loss sum, NLL sum, *metric sums]`` (:func:`pair_sums`)."""

    def eval_step(trainable, non_trainable, x, y, segments, frozen=None):
        sums, metrics, _ = pair_sums(model, objective, train, trainable, non_trainable, x, y,
                                     segments, frozen)
        return jnp.concatenate([sums, metrics])

    return eval_step


def pair_logs(objective, values: list) -> dict:
    """The pair metrics of the updates logged (each update's, from its step), averaged."""
    if not values:
        return {}
    return dict(zip(metric_names(objective), np.mean(values, axis=0).tolist(), strict=True))


def eval_logs(total: np.ndarray, objective) -> dict | None:
    """The validation record from the batches' summed :func:`make_pair_eval_step` outputs."""
    pairs, chosen_tokens, loss, nll = (float(v) for v in total[:4])
    if pairs == 0:
        return None
    logs = {"val_loss": loss / pairs + nll / max(chosen_tokens, 1.0), "val_pairs": int(pairs)}
    logs.update({f"val_{name}": float(v) / pairs
                 for name, v in zip(metric_names(objective), total[4:], strict=True)})
    return logs
