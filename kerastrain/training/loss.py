"""The language-model loss without full-vocabulary logits for the whole batch.

A nano run (batch 32 x 256, vocab 16000) would hold 32 x 256 x 16000 float32 logits (524 MB),
and autodiff keeps their softmax and gradient too, against 19 MB of weights. Here the output
projection and the cross-entropy run over sequence chunks of ``chunk_tokens`` tokens, and, as
fused linear cross-entropy implementations do (Liger, Apple's cut-cross-entropy in spirit), each
chunk's gradient with respect to the hidden states and the output matrix is computed in the
forward pass while its logits are at hand. The backward pass only scales those two gradients, so
nothing is recomputed (a ``jax.checkpoint`` of the chunk would redo the output matmul, a quarter
of a small model's FLOPs) and at most one chunk's logits exist at any time.

The network up to the final norm runs through Keras (a sub-model sharing the GPT's layers, under
the same ``StatelessScope`` that ``stateless_call`` uses); the projection reads the tied (or
untied) output matrix exactly as ``ReversibleEmbedding(reverse=True)`` does, in float32.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import keras
import numpy as np

LOGITS_PER_CHUNK = 1 << 22  # float32 logits alive at once (16 MB) unless chunk_tokens is given


def chunk_tokens_for(vocab_size: int, tokens: int) -> int:
    """Tokens per chunk: as many as keep one chunk's logits under ``LOGITS_PER_CHUNK``."""
    return int(max(1, min(tokens, LOGITS_PER_CHUNK // vocab_size)))


def _hidden_model(model):
    """A functional model from the token ids to the final norm's output, sharing ``model``'s layers."""
    hidden = getattr(model, "_kerastrain_hidden_model", None)
    if hidden is None:
        hidden = keras.Model(model.input, model.final_norm.output, name="gpt_hidden")
        hidden._register_call_context_args("segment_ids")  # packed rows (see gpt.py)
        model._kerastrain_hidden_model = hidden
    return hidden


def _output_matrix(model):
    """(d_model, vocab) output projection, as ``ReversibleEmbedding(reverse=True)`` reads it."""
    layer = model.token_embedding
    if layer.tie_weights:
        return keras.ops.transpose(layer.embeddings)
    return layer.reverse_embeddings


def hidden_and_head(model, trainable, non_trainable, x, training: bool, segment_ids=None):
    """(hidden states, output matrix, updated non-trainable values) for the given state.
    ``segment_ids``: packed rows' example ids (attention and positions stay inside each)."""
    mapping = list(zip(model.trainable_variables, trainable, strict=True))
    mapping += list(zip(model.non_trainable_variables, non_trainable, strict=True))
    extra = {} if segment_ids is None else {"segment_ids": segment_ids}
    with keras.StatelessScope(state_mapping=mapping) as scope:
        hidden = _hidden_model(model)(x, training=training, **extra)
        kernel = jnp.asarray(_output_matrix(model))
    updated = []
    for variable, old in zip(model.non_trainable_variables, non_trainable, strict=True):
        new = scope.get_current_value(variable)
        updated.append(old if new is None else new)
    return hidden, kernel, updated


def _chunks(h, labels, chunk: int):
    """(n, chunk, d) hidden and (n, chunk) labels, padded with label -1 (ignored)."""
    flat_h = h.reshape(-1, h.shape[-1])
    flat_y = labels.reshape(-1).astype(jnp.int32)
    pad = (-flat_h.shape[0]) % chunk
    if pad:
        flat_h = jnp.pad(flat_h, ((0, pad), (0, 0)))
        flat_y = jnp.pad(flat_y, (0, pad), constant_values=-1)
    return flat_h.reshape(-1, chunk, h.shape[-1]), flat_y.reshape(-1, chunk)


def _chunk_losses(h, kernel, y, softcap=None, z_loss=0.0):
    """Per-token cross-entropy of one chunk (0 where y < 0) plus ``z_loss * lse**2`` (the z-loss
    on the log-partition, PaLM / OLMo), and the softmax for the gradient; ``softcap``: the
    model's final-logit soft-cap (Gemma 2), applied as the model does."""
    logits = jnp.dot(h.astype(jnp.float32), kernel.astype(jnp.float32))
    if softcap is not None:
        logits = jnp.tanh(logits / softcap) * softcap
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.maximum(y, 0)[:, None], axis=-1)[:, 0]
    valid = y >= 0
    losses = lse - picked
    if z_loss:  # a static float: the plain loss computes no z-loss term at all
        losses = losses + z_loss * lse * lse
    return jnp.where(valid, losses, 0.0), logits, lse, valid


def chunked_loss_sum(h, kernel, labels, chunk: int, softcap=None, z_loss=0.0):
    """Sum of next-token cross-entropies (plus the z-loss, if any) over all trained tokens (no
    gradient)."""
    hs, ys = _chunks(h, labels, chunk)

    def body(total, xs):
        losses, *_ = _chunk_losses(xs[0], kernel, xs[1], softcap, z_loss)
        return total + losses.sum(), None

    total, _ = jax.lax.scan(body, jnp.float32(0.0), (hs, ys))
    return total


def _fused_fwd(h, kernel, labels, chunk, softcap=None, z_loss=0.0):
    hs, ys = _chunks(h, labels, chunk)
    k32 = kernel.astype(jnp.float32)

    def body(carry, xs):
        total, dk = carry
        hc, yc = xs
        losses, logits, lse, valid = _chunk_losses(hc, k32, yc, softcap, z_loss)
        # d(sum of losses)/d logits = (1 + 2 z lse) softmax - one_hot(label), zero on padding.
        # One fused elementwise pass (no one-hot array): XLA keeps a single chunk x vocab buffer.
        probs = jnp.exp(logits - lse[:, None])
        if z_loss:
            probs = probs * (1.0 + 2.0 * z_loss * lse[:, None])
        vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
        dlogits = jnp.where(vocab_ids == yc[:, None], probs - 1.0, probs)
        dlogits = jnp.where(valid[:, None], dlogits, 0.0)
        if softcap is not None:  # through cap * tanh(z / cap): times 1 - tanh^2
            dlogits = dlogits * (1.0 - jnp.square(logits / softcap))
        dh = jnp.dot(dlogits, k32.T)
        dk = dk + jnp.dot(hc.astype(jnp.float32).T, dlogits)
        return (total + losses.sum(), dk), dh

    (total, dk), dhs = jax.lax.scan(body, (jnp.float32(0.0), jnp.zeros_like(k32)), (hs, ys))
    dh = dhs.reshape(-1, h.shape[-1])[: h.shape[0] * h.shape[1]].reshape(h.shape)
    return total, (dh.astype(h.dtype), dk.astype(kernel.dtype), labels)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused_loss_sum(h, kernel, labels, chunk_array, softcap, z_loss):
    return chunked_loss_sum(h, kernel, labels, chunk_array.shape[0], softcap, z_loss)


def _fwd(h, kernel, labels, chunk_array, softcap, z_loss):
    total, residuals = _fused_fwd(h, kernel, labels, chunk_array.shape[0], softcap, z_loss)
    return total, (*residuals, chunk_array)


def _bwd(softcap, z_loss, residuals, g):
    dh, dk, labels, chunk_array = residuals
    zeros = np.zeros(labels.shape, dtype=jax.dtypes.float0)
    return g * dh, g * dk, zeros, jnp.zeros_like(chunk_array)


_fused_loss_sum.defvjp(_fwd, _bwd)


def fused_loss_sum(h, kernel, labels, chunk: int, softcap=None, z_loss: float = 0.0):
    """Like :func:`chunked_loss_sum`, differentiable in ``h`` and ``kernel`` (see module doc)."""
    # The chunk size travels as an array's static shape: custom_vjp takes no Python ints here.
    # ``z_loss`` is static (a float of the run's options): without it no term is computed.
    return _fused_loss_sum(h, kernel, labels, jnp.zeros((chunk,), jnp.float32), softcap,
                           float(z_loss))


def trained_tokens(y):
    """Labels that are trained (-1 marks a prompt token or padding: no loss)."""
    return jnp.sum(y >= 0)


def chunked_lm_loss(model, trainable, non_trainable, x, y, *, training: bool = True,
                    chunk_tokens: int | None = None, segment_ids=None, normalizer=None,
                    z_loss: float = 0.0):
    """(sum of next-token cross-entropies, plus ``z_loss`` times the squared log-partitions, /
    ``normalizer``; updated non-trainable values), chunked and fused. ``normalizer`` defaults to
    this batch's trained tokens (the mean); the training step passes the whole update's, so
    micro-batches add up to the update's mean."""
    hidden, kernel, non_trainable = hidden_and_head(model, trainable, non_trainable, x, training,
                                                    segment_ids)
    chunk = chunk_tokens or chunk_tokens_for(kernel.shape[-1], y.shape[0] * y.shape[1])
    total = fused_loss_sum(hidden, kernel, y, chunk, model.config.final_softcap, z_loss)
    if normalizer is None:
        normalizer = jnp.maximum(trained_tokens(y), 1)
    return total / normalizer, non_trainable


def chunked_eval_loss(model, trainable, non_trainable, x, y, chunk_tokens: int | None = None,
                      segment_ids=None):
    """(sum of cross-entropies, trained token count) for evaluation, chunked."""
    hidden, kernel, _ = hidden_and_head(model, trainable, non_trainable, x, False, segment_ids)
    chunk = chunk_tokens or chunk_tokens_for(kernel.shape[-1], y.shape[0] * y.shape[1])
    return (chunked_loss_sum(hidden, kernel, y, chunk, model.config.final_softcap),
            trained_tokens(y))
