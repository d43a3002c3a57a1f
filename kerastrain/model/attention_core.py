"""The attention core for training on JAX: the forward of ``jax.nn.dot_product_attention`` (the
XLA implementation Keras calls on CPU and GPU), with a backward that recomputes the
probabilities instead of keeping them.

Autodiff of the plain core keeps, per layer, the softmax and two more (batch, heads, seq, seq)
float32 arrays for the backward pass: at nano batch 32 x 256 that is 3 x 48 MiB per layer, more
than half of the step's memory. Here the backward keeps only q, k, v, the output and the
log-sum-exp of each row (FlashAttention's residuals, without its tiling) and recomputes the
probabilities as ``exp(scores - lse)`` when the cotangent arrives; its inputs pass through an
``optimization_barrier`` (XLA cannot merge the recomputed scores with the forward's) and take a
zero from the cotangent (its scheduler cannot move them into the forward pass, where they would
be alive for all layers at once: that is what ``jax.checkpoint`` of the core did on XLA:CPU). The extra work is one (seq x seq) score matmul per
layer. The forward is the same call Keras makes (same values, bit for bit); gradients equal
autodiff's up to float rounding (``tests/model/test_attention_core.py``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


def _forward(q, k, v, mask, is_causal, scale):
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal,
                                        implementation="xla", return_residual=True)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, mask, is_causal, scale):
    return _forward(q, k, v, mask, is_causal, scale)[0]


def _fwd(q, k, v, mask, is_causal, scale):
    out, lse = _forward(q, k, v, mask, is_causal, scale)
    return out, (q, k, v, mask, out, lse)


def _bwd(is_causal, scale, residuals, d_out):
    q, k, v, mask, out, lse = residuals
    # Tied to the cotangent (a zero taken from it), so that XLA's scheduler cannot move the
    # recomputation into the forward pass; the barrier keeps CSE from reusing the forward's.
    q, k, v, out, lse, d_out = jax.lax.optimization_barrier((q, k, v, out, lse, d_out))
    q = tied_to(q, d_out)
    s = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) * jnp.float32(scale)
    keep = _keep(s.shape, mask, is_causal)
    lse = jnp.transpose(lse, (0, 2, 1)).astype(jnp.float32)[..., None]  # (b, t, n) -> (b, n, t, 1)
    p = jnp.exp(s - lse)
    if keep is not None:
        p = jnp.where(keep, p, 0.0)
    dp = jnp.einsum("btnh,bsnh->bnts", d_out, v, preferred_element_type=jnp.float32)
    row = jnp.einsum("btnh,btnh->bnt", d_out.astype(jnp.float32), out.astype(jnp.float32))
    ds = (p * (dp - row[..., None]) * jnp.float32(scale)).astype(q.dtype)
    dq = jnp.einsum("bnts,bsnh->btnh", ds, k).astype(q.dtype)
    dk = jnp.einsum("bnts,btnh->bsnh", ds, q).astype(k.dtype)
    dv = jnp.einsum("bnts,btnh->bsnh", p.astype(v.dtype), d_out).astype(v.dtype)
    d_mask = None if mask is None else np.zeros(mask.shape, dtype=jax.dtypes.float0)
    return dq, dk, dv, d_mask


def tied_to(x, cotangent):
    """``x`` plus a zero taken from ``cotangent``: what is computed from it waits for the
    cotangent (the backward pass) in XLA's schedule."""
    return x + (cotangent.reshape(-1)[:1] * 0).astype(x.dtype)


def _keep(shape, mask, is_causal):
    """The boolean (.., t, s) mask the forward applied (None: every score kept)."""
    keep = mask
    if is_causal:
        t, s = shape[-2], shape[-1]
        causal = jnp.arange(t)[:, None] >= jnp.arange(s)[None, :]
        keep = causal if keep is None else keep & causal
    return keep


_attention.defvjp(_fwd, _bwd)


def dot_product_attention(q, k, v, mask=None, is_causal: bool = False, scale: float | None = None):
    """``keras.ops.dot_product_attention(q, k, v, mask=, is_causal=, scale=)`` on JAX
    ((batch, seq, heads, head_dim), as many key/value heads as query heads), with the backward
    above. ``mask``: boolean, broadcastable to (batch, heads, q, k)."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)  # as JAX computes it
    if mask is not None:
        mask = jnp.asarray(mask, bool)
    dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    return _attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask, is_causal, scale)

