"""Causal self-attention: multi-head with grouped-query heads, RoPE, q/k norm, the families'
scale, sliding window and soft-cap, packed examples (segment ids) and a KV cache.
"""

from __future__ import annotations

import keras
from keras import layers, ops


def _dense(units: int, name: str, use_bias: bool = False, stddev: float = 0.02) -> layers.Dense:
    # No biases by default: they add little to a pre-norm transformer; GPT-2 checkpoints have them.
    return layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.RandomNormal(stddev=stddev),
        name=name,
    )


def _dot_product_attention(q, k, v, mask=None, is_causal=False, scale=None):
    """``ops.dot_product_attention``; on JAX the same forward with a backward that keeps no
    (seq x seq) arrays (:mod:`kerastrain.model.attention_core`)."""
    if keras.backend.backend() != "jax":
        return ops.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, scale=scale)
    from kerastrain.model.attention_core import dot_product_attention

    return dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, scale=scale)


@keras.saving.register_keras_serializable(package="kerastrain")
class CausalSelfAttention(layers.Layer):
    """Multi-head causal self-attention with an optional rotary embedding and KV cache."""

    def __init__(self, num_heads: int, head_dim: int, use_rope: bool = True,
                 use_bias: bool = False, num_kv_heads: int | None = None,
                 rope_theta: float = 10000.0, rope_scaling: dict | None = None,
                 output_init_std: float = 0.02, d_model: int | None = None,
                 qkv_bias: bool = False, qk_norm: bool = False, norm_epsilon: float = 1e-6,
                 softcap: float | None = None, scale: float | None = None,
                 window: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.use_rope = use_rope
        self.use_bias = use_bias
        self.num_kv_heads = num_kv_heads or num_heads  # fewer: grouped-query attention
        self.rope_theta, self.rope_scaling = rope_theta, rope_scaling
        self.output_init_std = output_init_std
        # Families' switches: Qwen 2's q/k/v biases, q/k RMSNorm per head (Qwen 3, Gemma 3),
        # Gemma's soft-capped logits, attention scale and sliding window (None: off).
        self.d_model, self.qkv_bias, self.qk_norm = d_model, qkv_bias, qk_norm
        self.norm_epsilon, self.softcap, self.scale, self.window = norm_epsilon, softcap, scale, window
        width = num_heads * head_dim
        self.query = _dense(width, "query", use_bias or qkv_bias)
        self.key = _dense(self.num_kv_heads * head_dim, "key", use_bias or qkv_bias)
        self.value = _dense(self.num_kv_heads * head_dim, "value", use_bias or qkv_bias)
        self.output_projection = _dense(d_model or width, "output", use_bias, output_init_std)
        self.query_norm = self.key_norm = None
        if qk_norm:
            self.query_norm = layers.RMSNormalization(epsilon=norm_epsilon, name="query_norm")
            self.key_norm = layers.RMSNormalization(epsilon=norm_epsilon, name="key_norm")
        self.rotary = None
        if use_rope:
            if rope_scaling and rope_scaling.get("rope_type") == "linear":
                from kerastrain.model.embeddings import RotaryEmbedding

                self.rotary = RotaryEmbedding(max_wavelength=rope_theta, name="rotary",
                                              scaling_factor=rope_scaling["factor"])
            elif rope_scaling:
                # Llama 3's frequency scaling (imported checkpoints only): keras-hub's layer.
                from kerastrain.model.hub import require_keras_hub

                require_keras_hub("Llama 3 RoPE scaling")
                from keras_hub.src.models.llama.llama_rotary_embedding import LlamaRotaryEmbedding

                self.rotary = LlamaRotaryEmbedding(
                    max_wavelength=rope_theta, sequence_axis=1, feature_axis=-1, name="rotary",
                    frequency_adjustment_factor=rope_scaling.get("factor"),
                    low_freq_factor=rope_scaling.get("low_freq_factor"),
                    high_freq_factor=rope_scaling.get("high_freq_factor"),
                    pretraining_sequence_length=rope_scaling.get("original_max_position_embeddings"),
                )
            else:
                from kerastrain.model.embeddings import RotaryEmbedding

                self.rotary = RotaryEmbedding(max_wavelength=rope_theta, name="rotary")

    def build(self, input_shape):
        width = self.num_heads * self.head_dim
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)
        self.output_projection.build(tuple(input_shape[:-1]) + (width,))
        for norm in (self.query_norm, self.key_norm):
            if norm is not None:
                norm.build(tuple(input_shape[:-1]) + (self.num_heads, self.head_dim))
        self.built = True

    def _attend(self, q, k, v, segment_ids=None):
        """Causal attention over one sequence (or packed examples: ``segment_ids``), with the
        families' scale, window and soft-cap."""
        length = ops.shape(q)[1]
        if self.softcap is None and self.window is None and segment_ids is None:
            return _dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        pos = ops.arange(length)
        gap = ops.expand_dims(pos, 1) - ops.expand_dims(pos, 0)  # query i - key j
        mask = gap >= 0
        if self.window is not None:  # key j is seen by query i when 0 <= i - j < window
            mask = mask & (gap < self.window)
        mask = mask[None, None, :, :]
        if segment_ids is not None:  # never across a packed example's boundary
            from kerastrain.model.embeddings import segment_attention_mask

            mask = mask & segment_attention_mask(segment_ids)
        return self._attend_masked(q, k, v, mask)

    def _attend_masked(self, q, k, v, mask):
        """Attention under a (batch, heads, q, k) boolean mask. Keras' ``dot_product_attention``
        soft-caps on TPU only, so a soft-capped layer (Gemma 2) computes its scores here."""
        if self.softcap is None:
            return _dot_product_attention(q, k, v, mask=mask, scale=self.scale)
        scale = self.scale if self.scale is not None else self.head_dim ** -0.5
        logits = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
        logits = ops.tanh(logits * scale / self.softcap) * self.softcap
        logits = ops.where(mask, logits, -1e30)
        probs = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        return ops.einsum("bhqk,bkhd->bqhd", probs, v)

    def _split_heads(self, x, heads=None):
        batch, seq = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, seq, heads or self.num_heads, self.head_dim))

    def _repeat_kv(self, x):
        # Key/value head j serves query heads j*n .. j*n+n-1 (as transformers' repeat_kv).
        x = self._split_heads(x, self.num_kv_heads)
        groups = self.num_heads // self.num_kv_heads
        return x if groups == 1 else ops.repeat(x, groups, axis=2)

    def call(self, x, cache=None, cache_update_index=None, segment_ids=None):
        """``cache``: (batch, 2, max_len, heads, head_dim) keys/values; returns (out, cache).
        ``segment_ids``: (batch, seq) packed examples: attention stays inside each, and
        positions restart at its first token."""
        start = 0 if cache_update_index is None else cache_update_index
        q = self._split_heads(self.query(x))
        k = self._repeat_kv(self.key(x))
        v = self._repeat_kv(self.value(x))
        if self.query_norm is not None:
            q, k = self.query_norm(q), self.key_norm(k)
        if self.rotary is not None:
            if segment_ids is not None:
                from kerastrain.model.embeddings import segment_positions

                positions = segment_positions(segment_ids)
                q = self.rotary(q, positions=positions)
                k = self.rotary(k, positions=positions)
            else:
                q = self.rotary(q, start_index=start)
                k = self.rotary(k, start_index=start)
        if cache is None:
            out = self._attend(q, k, v, segment_ids)
        else:
            k_cache = ops.slice_update(cache[:, 0], (0, start, 0, 0), ops.cast(k, cache.dtype))
            v_cache = ops.slice_update(cache[:, 1], (0, start, 0, 0), ops.cast(v, cache.dtype))
            cache = ops.stack((k_cache, v_cache), axis=1)
            # Query i (absolute position start + i) sees cached keys 0 .. start + i.
            q_pos = ops.arange(ops.shape(q)[1]) + start
            k_pos = ops.arange(ops.shape(k_cache)[1])
            mask = ops.expand_dims(k_pos, 0) <= ops.expand_dims(q_pos, 1)
            if self.window is not None:
                mask = mask & (ops.expand_dims(q_pos, 1) - ops.expand_dims(k_pos, 0) < self.window)
            mask = mask[None, None, :, :]  # broadcast to (batch, heads, q, k)
            out = self._attend_masked(q, ops.cast(k_cache, q.dtype), ops.cast(v_cache, q.dtype), mask)
        batch, seq = ops.shape(out)[0], ops.shape(out)[1]
        out = self.output_projection(ops.reshape(out, (batch, seq, self.num_heads * self.head_dim)))
        return out if cache is None else (out, cache)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model, "qkv_bias": self.qkv_bias, "qk_norm": self.qk_norm,
            "norm_epsilon": self.norm_epsilon, "softcap": self.softcap, "scale": self.scale,
            "window": self.window,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "use_rope": self.use_rope,
            "use_bias": self.use_bias,
            "num_kv_heads": self.num_kv_heads,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "output_init_std": self.output_init_std,
        }
