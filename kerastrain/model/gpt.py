"""The decoder-only GPT: ``build_model(cfg)`` maps int32 token ids (batch, seq) to float32 logits.

Only Keras layers and ``keras.ops`` are used, so the model runs on any Keras backend. Every layer
is named explicitly (``token_embedding``, ``block_0/attention/query``, ...) because checkpoints
restore by variable path, and auto-generated names (``dense_17``) differ between two processes.
Defaults follow LLaMA-style GPTs: RMSNorm, SwiGLU MLP, rotary positions, tied embeddings, no
biases in projections.
"""

from __future__ import annotations

import keras
from keras import layers

from kerastrain.config import ModelConfig
from kerastrain.model.attention import CausalSelfAttention, _dense
from kerastrain.model.lora import apply_lora, merge_lora  # noqa: F401  (re-exported for callers)
from kerastrain.model.switches import embed, is_local_layer, soft_cap


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


def _activation(name: str):
    if name == "gelu_tanh":  # GPT-2's GELU (transformers' "gelu_new"), for exact GPT-2 export
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)


@keras.saving.register_keras_serializable(package="kerastrain")
class FeedForward(layers.Layer):
    """SwiGLU (``down(silu(gate(x)) * up(x))``) or a plain two-layer MLP."""

    def __init__(self, d_model: int, d_ff: int, use_swiglu: bool, activation: str,
                 use_bias: bool = False, output_init_std: float = 0.02,
                 glu_activation: str = "silu", **kwargs):
        super().__init__(**kwargs)
        self.glu_activation = glu_activation  # gelu_tanh: GeGLU (Gemma)
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
        if self.gate is not None and self.glu_activation == "silu" and keras.backend.backend() == "jax":
            from kerastrain.model.glu import silu_glu

            hidden = silu_glu(self.gate(x), self.up(x))  # keeps less for the backward pass
        elif self.gate is not None:
            hidden = _activation(self.glu_activation)(self.gate(x)) * self.up(x)
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
            "glu_activation": self.glu_activation,
        }


@keras.saving.register_keras_serializable(package="kerastrain")
class TransformerBlock(layers.Layer):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, with residual dropout;
    with ``post_norms`` (Gemma 2/3) each branch's output is normalized too before the sum."""

    def __init__(self, cfg_dict: dict, layer_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        cfg = ModelConfig.from_dict(cfg_dict)
        self.cfg_dict = cfg.to_dict()
        self.layer_index = layer_index
        local = is_local_layer(cfg, layer_index)
        local_rope = local and cfg.rope_local_theta is not None  # Gemma 3: its own base, unscaled
        self.attention_norm = _norm(cfg, "attention_norm")
        self.attention = CausalSelfAttention(
            cfg.num_heads, cfg.attention_head_dim, cfg.use_rope, cfg.use_bias,
            cfg.num_kv_heads, cfg.rope_local_theta if local_rope else cfg.rope_theta,
            None if local_rope else cfg.rope_scaling,
            output_init_std=residual_init_std(cfg.num_layers), name="attention",
            d_model=cfg.d_model, qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm,
            norm_epsilon=norm_epsilon(cfg), softcap=cfg.attn_softcap,
            scale=None if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar ** -0.5,
            window=cfg.sliding_window if local else None,
        )
        self.attention_dropout = layers.Dropout(cfg.dropout_rate, name="attention_dropout")
        self.mlp_norm = _norm(cfg, "mlp_norm")
        self.mlp = FeedForward(
            cfg.d_model, cfg.d_ff, cfg.use_swiglu, cfg.activation, cfg.use_bias,
            output_init_std=residual_init_std(cfg.num_layers), name="mlp",
            glu_activation=cfg.glu_activation,
        )
        self.mlp_dropout = layers.Dropout(cfg.dropout_rate, name="mlp_dropout")
        # ``model(x, segment_ids=...)`` hands packed rows' segment ids to every block.
        self._register_call_context_args("segment_ids")
        self.post_attention_norm = self.post_mlp_norm = None
        if cfg.post_norms:
            self.post_attention_norm = _norm(cfg, "post_attention_norm")
            self.post_mlp_norm = _norm(cfg, "post_mlp_norm")

    def build(self, input_shape):
        for layer in (self.attention_norm, self.attention, self.mlp_norm, self.mlp,
                      self.post_attention_norm, self.post_mlp_norm):
            if layer is not None:
                layer.build(input_shape)
        self.built = True

    def compute_output_spec(self, x, *args, **kwargs):
        """A block keeps its input's shape and dtype. Said here, the functional model's symbolic
        pass does not trace every block (``jax.eval_shape``: ~0.055 s a block, 0.22 s of each
        nano start, 1.3 s at 24 layers); :meth:`build` has made the weights already."""
        return keras.KerasTensor(x.shape, dtype=x.dtype)

    def _post(self, norm, y):
        return y if norm is None else norm(y)

    def call(self, x, cache=None, cache_update_index=None, training=None, segment_ids=None):
        if cache is None and self.cfg_dict.get("remat"):
            return self._rematerialized(x, training, segment_ids)
        h = self.attention_norm(x)
        if cache is None:
            attn = self.attention(h, segment_ids=segment_ids)
        else:
            attn, cache = self.attention(h, cache=cache, cache_update_index=cache_update_index)
        attn = self._post(self.post_attention_norm, attn)
        x = x + self.attention_dropout(attn, training=training)
        mlp = self._post(self.post_mlp_norm, self.mlp(self.mlp_norm(x)))
        x = x + self.mlp_dropout(mlp, training=training)
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
            attn = self._post(self.post_attention_norm, attn)
            x = x + drop(drops[0], attn, seeds[0])
            mlp = self._post(self.post_mlp_norm, self.mlp(self.mlp_norm(x)))
            return x + drop(drops[1], mlp, seeds[1])

        return keras.remat(block)(x, seeds, segment_ids)

    def get_config(self):
        return {**super().get_config(), "cfg_dict": self.cfg_dict, "layer_index": self.layer_index}


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
        blocks = [TransformerBlock(cfg.to_dict(), i, name=f"block_{i}") for i in range(cfg.num_layers)]
        final_norm = _norm(cfg, "final_norm")
        # A float32 identity so the model's output dtype is float32 whatever the policy.
        logits_layer = layers.Activation("linear", dtype="float32", name="logits")

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        x = embed(cfg, token_embedding, token_ids)
        if position_embedding is not None:
            x = x + position_embedding(x)
        x = embedding_dropout(x)
        for block in blocks:
            x = block(x)
        x = final_norm(x)
        logits = logits_layer(soft_cap(token_embedding(x, reverse=True), cfg.final_softcap))
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
