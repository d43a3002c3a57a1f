"""The decoder-only GPT: ``build_model(cfg)`` maps int32 token ids (batch, seq) to float32 logits.

Only Keras layers and ``keras.ops`` are used, so the model runs on any Keras backend. Every layer
is named explicitly (``token_embedding``, ``block_0/attention/query``, ...) because checkpoints
restore by variable path, and auto-generated names (``dense_17``) differ between two processes.
Defaults follow LLaMA-style GPTs: RMSNorm, SwiGLU MLP, rotary positions, tied embeddings, no
biases in projections.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kerastrain.config import ModelConfig
from kerastrain.model.lora import apply_lora, merge_lora  # noqa: F401  (re-exported for callers)


def norm_epsilon(cfg: ModelConfig) -> float:
    if cfg.norm_epsilon is not None:
        return cfg.norm_epsilon
    return 1e-6 if cfg.use_rmsnorm else 1e-5


def _norm(cfg: ModelConfig, name: str) -> keras.layers.Layer:
    if cfg.use_rmsnorm:
        return layers.RMSNormalization(epsilon=norm_epsilon(cfg), name=name)
    return layers.LayerNormalization(epsilon=norm_epsilon(cfg), name=name)


def residual_init_std(num_layers: int) -> float:
    """GPT-2's init for projections that write into the residual stream (attention output, MLP
    down): 0.02 / sqrt(2 * layers), so the residual's variance does not grow with depth."""
    return 0.02 / (2 * num_layers) ** 0.5


def _dense(units: int, name: str, use_bias: bool = False, stddev: float = 0.02) -> layers.Dense:
    # No biases by default: they add little to a pre-norm transformer; GPT-2 checkpoints have them.
    return layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.RandomNormal(stddev=stddev),
        name=name,
    )


@keras.saving.register_keras_serializable(package="kerastrain")
class CausalSelfAttention(layers.Layer):
    """Multi-head causal self-attention with an optional rotary embedding and KV cache."""

    def __init__(self, num_heads: int, head_dim: int, use_rope: bool = True,
                 use_bias: bool = False, num_kv_heads: int | None = None,
                 rope_theta: float = 10000.0, rope_scaling: dict | None = None,
                 output_init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.use_rope = use_rope
        self.use_bias = use_bias
        self.num_kv_heads = num_kv_heads or num_heads  # fewer: grouped-query attention
        self.rope_theta, self.rope_scaling = rope_theta, rope_scaling
        self.output_init_std = output_init_std
        width = num_heads * head_dim
        self.query = _dense(width, "query", use_bias)
        self.key = _dense(self.num_kv_heads * head_dim, "key", use_bias)
        self.value = _dense(self.num_kv_heads * head_dim, "value", use_bias)
        self.output_projection = _dense(width, "output", use_bias, output_init_std)
        self.rotary = None
        if use_rope:
            if rope_scaling:
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
        self.built = True

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
        if self.rotary is not None:
            if segment_ids is not None:
                from kerastrain.model.embeddings import segment_positions

                positions = segment_positions(segment_ids)
                q = self.rotary(q, positions=positions)
                k = self.rotary(k, positions=positions)
            else:
                q = self.rotary(q, start_index=start)
                k = self.rotary(k, start_index=start)
        if segment_ids is not None:
            from kerastrain.model.embeddings import segment_attention_mask

            out = ops.dot_product_attention(q, k, v, mask=segment_attention_mask(segment_ids))
        elif cache is None:
            out = ops.dot_product_attention(q, k, v, is_causal=True)
        else:
            k_cache = ops.slice_update(cache[:, 0], (0, start, 0, 0), ops.cast(k, cache.dtype))
            v_cache = ops.slice_update(cache[:, 1], (0, start, 0, 0), ops.cast(v, cache.dtype))
            cache = ops.stack((k_cache, v_cache), axis=1)
            # Query i (absolute position start + i) sees cached keys 0 .. start + i.
            q_pos = ops.arange(ops.shape(q)[1]) + start
            k_pos = ops.arange(ops.shape(k_cache)[1])
            mask = ops.expand_dims(k_pos, 0) <= ops.expand_dims(q_pos, 1)
            mask = mask[None, None, :, :]  # broadcast to (batch, heads, q, k)
            out = ops.dot_product_attention(
                q, ops.cast(k_cache, q.dtype), ops.cast(v_cache, q.dtype), mask=mask
            )
        batch, seq = ops.shape(out)[0], ops.shape(out)[1]
        out = self.output_projection(ops.reshape(out, (batch, seq, self.num_heads * self.head_dim)))
        return out if cache is None else (out, cache)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "use_rope": self.use_rope,
            "use_bias": self.use_bias,
            "num_kv_heads": self.num_kv_heads,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "output_init_std": self.output_init_std,
        }


def _activation(name: str):
    if name == "gelu_tanh":  # GPT-2's GELU (transformers' "gelu_new"), for exact GPT-2 export
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)


@keras.saving.register_keras_serializable(package="kerastrain")
class FeedForward(layers.Layer):
    """SwiGLU (``down(silu(gate(x)) * up(x))``) or a plain two-layer MLP."""

    def __init__(self, d_model: int, d_ff: int, use_swiglu: bool, activation: str,
                 use_bias: bool = False, output_init_std: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.d_ff = d_model, d_ff
        self.use_swiglu, self.activation, self.use_bias = use_swiglu, activation, use_bias
        self.output_init_std = output_init_std
        self.gate = _dense(d_ff, "gate", use_bias) if use_swiglu else None
        self.up = _dense(d_ff, "up", use_bias)
        self.down = _dense(d_model, "down", use_bias, output_init_std)

    def build(self, input_shape):
        if self.gate is not None:
            self.gate.build(input_shape)
        self.up.build(input_shape)
        self.down.build(tuple(input_shape[:-1]) + (self.d_ff,))
        self.built = True

    def call(self, x):
        if self.gate is not None:
            hidden = ops.silu(self.gate(x)) * self.up(x)
        else:
            hidden = _activation(self.activation)(self.up(x))
        return self.down(hidden)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "use_swiglu": self.use_swiglu,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "output_init_std": self.output_init_std,
        }


@keras.saving.register_keras_serializable(package="kerastrain")
class TransformerBlock(layers.Layer):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, with residual dropout."""

    def __init__(self, cfg_dict: dict, **kwargs):
        super().__init__(**kwargs)
        cfg = ModelConfig.from_dict(cfg_dict)
        self.cfg_dict = cfg.to_dict()
        self.attention_norm = _norm(cfg, "attention_norm")
        self.attention = CausalSelfAttention(
            cfg.num_heads, cfg.d_model // cfg.num_heads, cfg.use_rope, cfg.use_bias,
            cfg.num_kv_heads, cfg.rope_theta, cfg.rope_scaling,
            output_init_std=residual_init_std(cfg.num_layers), name="attention",
        )
        self.attention_dropout = layers.Dropout(cfg.dropout_rate, name="attention_dropout")
        self.mlp_norm = _norm(cfg, "mlp_norm")
        self.mlp = FeedForward(
            cfg.d_model, cfg.d_ff, cfg.use_swiglu, cfg.activation, cfg.use_bias,
            output_init_std=residual_init_std(cfg.num_layers), name="mlp"
        )
        self.mlp_dropout = layers.Dropout(cfg.dropout_rate, name="mlp_dropout")
        # ``model(x, segment_ids=...)`` hands packed rows' segment ids to every block.
        self._register_call_context_args("segment_ids")

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, x, cache=None, cache_update_index=None, training=None, segment_ids=None):
        if cache is None and self.cfg_dict.get("remat"):
            return self._rematerialized(x, training, segment_ids)
        h = self.attention_norm(x)
        if cache is None:
            attn = self.attention(h, segment_ids=segment_ids)
        else:
            attn, cache = self.attention(h, cache=cache, cache_update_index=cache_update_index)
        x = x + self.attention_dropout(attn, training=training)
        x = x + self.mlp_dropout(self.mlp(self.mlp_norm(x)), training=training)
        return x if cache is None else (x, cache)

    def _rematerialized(self, x, training, segment_ids=None):
        """The block under ``keras.remat`` (jax.checkpoint): only ``x`` is kept for the backward
        pass, the block's activations are recomputed there (``--remat``).

        Keras' ``RematScope`` cannot be used here: it passes ``training`` through the checkpoint as
        a traced value, and dropout's seed-generator update inside the checkpoint would leak a
        tracer. So dropout seeds are drawn outside (the same seeds ``Dropout`` would draw) and the
        function inside is pure.
        """
        drops = (self.attention_dropout, self.mlp_dropout)
        seeds = [None, None]
        if training and self.attention_dropout.rate > 0:
            seeds = [d.seed_generator.next() for d in drops]

        def drop(layer, y, seed):
            return y if seed is None else keras.random.dropout(y, layer.rate, seed=seed)

        def block(x, seeds, segment_ids):
            attn = self.attention(self.attention_norm(x), segment_ids=segment_ids)
            x = x + drop(drops[0], attn, seeds[0])
            return x + drop(drops[1], self.mlp(self.mlp_norm(x)), seeds[1])

        return keras.remat(block)(x, seeds, segment_ids)

    def get_config(self):
        return {**super().get_config(), "cfg_dict": self.cfg_dict}


class GPT(keras.Model):
    """The GPT as a functional model that also exposes its layers for cached decoding.

    Attributes used by :mod:`kerastrain.model.causal_lm`: ``token_embedding`` (a tied
    ``ReversibleEmbedding``), ``position_embedding`` (or None with RoPE), ``blocks``,
    ``final_norm``, ``config`` (the :class:`ModelConfig`).
    """

    def __init__(self, cfg: ModelConfig, name: str = "gpt", **kwargs):
        cfg.validate()
        token_embedding = layers.ReversibleEmbedding(
            cfg.vocab_size,
            cfg.d_model,
            tie_weights=cfg.tie_embeddings,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            reverse_dtype="float32",  # logits and softmax stay float32 under mixed precision
            name="token_embedding",
        )
        position_embedding = None
        if not cfg.use_rope:
            from kerastrain.model.embeddings import PositionEmbedding

            position_embedding = PositionEmbedding(
                cfg.seq_len,
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="position_embedding",
            )
        embedding_dropout = layers.Dropout(cfg.dropout_rate, name="embedding_dropout")
        blocks = [TransformerBlock(cfg.to_dict(), name=f"block_{i}") for i in range(cfg.num_layers)]
        final_norm = _norm(cfg, "final_norm")
        # A float32 identity so the model's output dtype is float32 whatever the policy.
        logits_layer = layers.Activation("linear", dtype="float32", name="logits")

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        x = token_embedding(token_ids)
        if position_embedding is not None:
            x = x + position_embedding(x)
        x = embedding_dropout(x)
        for block in blocks:
            x = block(x)
        x = final_norm(x)
        logits = logits_layer(token_embedding(x, reverse=True))
        super().__init__(inputs=token_ids, outputs=logits, name=name, **kwargs)
        # Packed rows: ``model(ids, segment_ids=s)`` reaches every block and position embedding.
        self._register_call_context_args("segment_ids")

        self.config = cfg
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.embedding_dropout = embedding_dropout
        self.blocks = blocks
        self.final_norm = final_norm
        self.logits_layer = logits_layer


def build_model(cfg: ModelConfig) -> keras.Model:
    """Build the GPT described by ``cfg`` (built, not compiled).

    LoRA is *not* applied here even when ``cfg.use_lora`` is set: the caller first restores base
    weights (``--init-from``) into the plain model, then calls :func:`apply_lora`. Call
    :func:`apply_precision` before this: the dtype policy is read when layers are created.
    """
    return GPT(cfg)


def apply_precision(cfg: ModelConfig) -> str:
    """Set the global Keras dtype policy from ``cfg.mixed_precision``; returns the policy name.

    ``mixed_bfloat16`` keeps variables in float32 and computes in bfloat16; the model casts its
    logits to float32 itself.
    """
    policy = "mixed_bfloat16" if cfg.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy
