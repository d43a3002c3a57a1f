"""The pretrained families' switches that act outside one layer: which blocks attend within the
sliding window, Gemma's embedding scale and final-logit soft-cap. Shared by the GPT
(:mod:`kerastrain.model.gpt`), cached decoding (:mod:`kerastrain.model.causal_lm`) and the loss.
"""

from __future__ import annotations

from keras import ops

from kerastrain.config import ModelConfig


def is_local_layer(cfg: ModelConfig, index: int) -> bool:
    """Whether block ``index`` attends within ``sliding_window`` (every
    ``sliding_window_pattern``-th layer is global, as Gemma's ``layer_types``; no pattern: all)."""
    if cfg.sliding_window is None:
        return False
    return cfg.sliding_window_pattern is None or (index + 1) % cfg.sliding_window_pattern != 0


def embed(cfg: ModelConfig, token_embedding, token_ids):
    """Token embeddings, times sqrt(d_model) with ``scale_embeddings`` (Gemma; in the compute
    dtype, as transformers rounds its normalizer)."""
    x = token_embedding(token_ids)
    if cfg.scale_embeddings:
        x = x * ops.cast(cfg.d_model ** 0.5, x.dtype)
    return x


def soft_cap(logits, cap: float | None):
    """``cap * tanh(logits / cap)`` (Gemma 2's final-logit soft-capping); ``None``: unchanged."""
    return logits if cap is None else ops.tanh(logits / cap) * cap
