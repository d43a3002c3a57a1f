"""Our GPT's weights to and from keras-hub's ``Llama3Backbone`` and ``GPT2Backbone``, exactly.

The layouts differ only in shape, never in order: our ``query`` Dense kernel ``(d, heads*hd)`` is
keras-hub's EinsumDense kernel ``(d, heads, hd)`` (heads split the last axis the same way), our
``output`` kernel ``(heads*hd, d)`` is ``(heads, hd, d)``; norms, MLP kernels and embeddings have
the same shapes. So every weight maps by a reshape. What must *also* agree, checked by
:func:`problems_for`:

- Llama 3: RMSNorm, SwiGLU (``down(silu(gate) * up)`` both), RoPE (we use keras-hub's
  ``LlamaRotaryEmbedding``: rotate-half, base ``rope_theta``, Llama 3 frequency scaling), no
  biases; the configuration carries key/value heads (grouped-query attention, key/value head j
  serving query heads j*n..j*n+n-1 in both), RoPE base and scaling and the norm epsilon.
- GPT-2: LayerNorm (epsilon 1e-5 both), a GELU MLP, learned positions (``seq_len`` of them),
  tied embeddings; keras-hub's GPT-2 uses the tanh GELU (``--activation gelu_tanh`` here) and its
  transformers loader assumes ``d_ff = 4 * d_model``. GPT-2 has biases: a GPT without
  ``use_bias`` exports zeros; an imported GPT-2 gets ``use_bias``.

Dropout is off in both directions' inference copies (rate 0); it only matters while training.
"""

from __future__ import annotations

import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError
from kerastrain.model.hub import require_keras_hub

# The families' switches (kerastrain.model.hf_families) that Llama 3 and GPT-2 lack.
NEW_SWITCHES = ("qkv_bias", "qk_norm", "glu_activation", "scale_embeddings", "post_norms",
                "attn_softcap", "final_softcap", "query_pre_attn_scalar", "sliding_window",
                "sliding_window_pattern", "rope_local_theta")
_LLAMA = ModelConfig()


def problems_for(cfg: ModelConfig, architecture: str) -> list[str]:
    """The options of ``cfg`` that ``architecture`` ('llama3' or 'gpt2') cannot hold, as flags."""
    found = [f"{name}={getattr(cfg, name)!r} ({architecture} has none)" for name in NEW_SWITCHES
             if getattr(cfg, name) != getattr(_LLAMA, name)]
    if cfg.head_dim not in (None, cfg.d_model // cfg.num_heads):
        found.append(f"head_dim={cfg.head_dim} (not d_model / num_heads)")
    if cfg.rope_scaling and cfg.rope_scaling.get("rope_type") == "linear":
        found.append("linear RoPE scaling")
    if architecture == "llama3":
        if not cfg.use_rmsnorm:
            found.append("--no-rmsnorm (Llama uses RMSNorm)")
        if not cfg.use_swiglu:
            found.append("--no-swiglu (Llama uses a SwiGLU MLP)")
        if not cfg.use_rope:
            found.append("--no-rope (Llama uses rotary positions)")
        if cfg.use_bias:
            found.append("biases (Llama has none)")
    elif architecture == "gpt2":
        if cfg.use_rmsnorm:
            found.append("RMSNorm (GPT-2 needs --no-rmsnorm)")
        if cfg.use_swiglu:
            found.append("SwiGLU (GPT-2 needs --no-swiglu)")
        if cfg.use_rope:
            found.append("RoPE (GPT-2 needs --no-rope)")
        if not cfg.tie_embeddings:
            found.append("untied embeddings (GPT-2 ties them)")
        if cfg.activation not in ("gelu", "gelu_tanh"):
            found.append(f"--activation {cfg.activation} (GPT-2 uses gelu_tanh)")
        if cfg.d_ff != 4 * cfg.d_model:
            found.append(f"--d-ff {cfg.d_ff} (GPT-2 needs 4 x d_model = {4 * cfg.d_model})")
        if (cfg.num_kv_heads or cfg.num_heads) != cfg.num_heads:
            found.append("grouped-query attention (GPT-2 has none)")
        if cfg.norm_epsilon not in (None, 1e-5):
            found.append(f"norm epsilon {cfg.norm_epsilon} (GPT-2 uses 1e-5)")
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    return found


def _pairs_llama3(gpt, backbone) -> list[tuple]:
    """(our variable, keras-hub variable) for every weight of a Llama 3 backbone."""
    pairs = [(gpt.token_embedding.embeddings, backbone.token_embedding.embeddings)]
    if not gpt.config.tie_embeddings:
        pairs.append((gpt.token_embedding.reverse_embeddings,
                      backbone.token_embedding.reverse_embeddings))
    for block, layer in zip(gpt.blocks, backbone.transformer_layers, strict=True):
        attn, theirs = block.attention, layer._self_attention_layer
        pairs += [
            (block.attention_norm.scale, layer._self_attention_layernorm.scale),
            (attn.query, theirs._query_dense.kernel),
            (attn.key, theirs._key_dense.kernel),
            (attn.value, theirs._value_dense.kernel),
            (attn.output_projection, theirs._output_dense.kernel),
            (block.mlp_norm.scale, layer._feedforward_layernorm.scale),
            (block.mlp.gate, layer._feedforward_gate_dense.kernel),
            (block.mlp.up, layer._feedforward_intermediate_dense.kernel),
            (block.mlp.down, layer._feedforward_output_dense.kernel),
        ]
    pairs.append((gpt.final_norm.scale, backbone.get_layer("sequence_output_layernorm").scale))
    return pairs


def _pairs_gpt2(gpt, backbone) -> tuple[list[tuple], list]:
    """(our variable, keras-hub variable) pairs, and keras-hub's biases we do not have (a GPT
    without ``use_bias``): zero on export, and they must be zero to import."""
    pairs = [
        (gpt.token_embedding.embeddings, backbone.token_embedding.embeddings),
        (gpt.position_embedding.position_embeddings, backbone.position_embedding.position_embeddings),
    ]
    biases = []
    for block, layer in zip(gpt.blocks, backbone.transformer_layers, strict=True):
        attn, theirs = block.attention, layer._self_attention_layer
        dense = [
            (attn.query, theirs._query_dense),
            (attn.key, theirs._key_dense),
            (attn.value, theirs._value_dense),
            (attn.output_projection, theirs._output_dense),
            (block.mlp.up, layer._feedforward_intermediate_dense),
            (block.mlp.down, layer._feedforward_output_dense),
        ]
        pairs += [(ours, their.kernel) for ours, their in dense]
        if gpt.config.use_bias:
            pairs += [(ours.bias, their.bias) for ours, their in dense]
        else:
            biases += [their.bias for _, their in dense]
        for ours, their in ((block.attention_norm, layer._self_attention_layer_norm),
                            (block.mlp_norm, layer._feedforward_layer_norm)):
            pairs += [(ours.gamma, their.gamma), (ours.beta, their.beta)]
    final = backbone.get_layer("layer_norm")
    pairs += [(gpt.final_norm.gamma, final.gamma), (gpt.final_norm.beta, final.beta)]
    return pairs, biases


def _value(source) -> np.ndarray:
    """A variable's value; for one of our Dense layers its kernel with any LoRA adapter merged."""
    if hasattr(source, "lora_enabled"):
        if source.lora_enabled:
            from kerastrain.model.lora import merged_kernel

            return merged_kernel(source)
        return np.asarray(source.kernel.value if hasattr(source.kernel, "value") else source.kernel)
    return np.asarray(source.value)


def _target(source):
    """The variable to write in one of our layers (the base kernel of a Dense)."""
    if hasattr(source, "lora_enabled"):
        return source._kernel
    return source


def to_keras_hub(gpt, architecture: str):
    """A float32 keras-hub backbone computing exactly what ``gpt`` computes (LoRA merged)."""
    import keras
    keras_hub = require_keras_hub("Mapping to keras-hub models")

    cfg = gpt.config
    problems = problems_for(cfg, architecture)
    if problems:
        raise ConfigError(f"{architecture} cannot hold this model: " + ", ".join(problems))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        if architecture == "llama3":
            from kerastrain.model.gpt import norm_epsilon

            scaling = cfg.rope_scaling or {}
            backbone = keras_hub.models.Llama3Backbone(
                vocabulary_size=cfg.vocab_size, num_layers=cfg.num_layers,
                num_query_heads=cfg.num_heads,
                num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
                hidden_dim=cfg.d_model, intermediate_dim=cfg.d_ff,
                rope_max_wavelength=cfg.rope_theta, layer_norm_epsilon=norm_epsilon(cfg),
                rope_frequency_adjustment_factor=scaling.get("factor"),
                rope_low_freq_factor=scaling.get("low_freq_factor"),
                rope_high_freq_factor=scaling.get("high_freq_factor"),
                rope_pretraining_sequence_length=scaling.get("original_max_position_embeddings"),
                dropout=0, tie_word_embeddings=cfg.tie_embeddings, dtype="float32",
            )
            pairs, biases = _pairs_llama3(gpt, backbone), []
        else:
            backbone = keras_hub.models.GPT2Backbone(
                vocabulary_size=cfg.vocab_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                hidden_dim=cfg.d_model, intermediate_dim=cfg.d_ff, dropout=0,
                max_sequence_length=cfg.seq_len, dtype="float32",
            )
            pairs, biases = _pairs_gpt2(gpt, backbone)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for ours, theirs in pairs:
        theirs.assign(_value(ours).reshape(tuple(theirs.shape)).astype("float32"))
    for bias in biases:
        bias.assign(np.zeros(tuple(bias.shape), "float32"))
    return backbone


def config_from_keras_hub(backbone, seq_len: int | None = None) -> tuple[str, ModelConfig]:
    """(architecture, ModelConfig) of our GPT that computes what ``backbone`` computes.

    Raises :class:`ConfigError` naming what our GPT lacks (grouped-query attention, RoPE scaling,
    another RoPE base, non-zero biases) when the backbone cannot be held exactly.
    """
    keras_hub = require_keras_hub("Mapping to keras-hub models")

    if isinstance(backbone, keras_hub.models.Llama3Backbone):
        if backbone.rope_position_scaling_factor not in (None, 1.0):
            raise ConfigError("this Llama model needs linear RoPE position scaling, which "
                              "kerastrain's GPT does not have; it cannot be fine-tuned here")
        scaling = None
        if backbone.rope_frequency_adjustment_factor is not None:
            scaling = {"factor": backbone.rope_frequency_adjustment_factor,
                       "low_freq_factor": backbone.rope_low_freq_factor,
                       "high_freq_factor": backbone.rope_high_freq_factor,
                       "original_max_position_embeddings": backbone.rope_pretraining_sequence_length}
        cfg = ModelConfig(
            vocab_size=backbone.vocabulary_size, seq_len=seq_len or 2048,
            d_model=backbone.hidden_dim, num_layers=backbone.num_layers,
            num_heads=backbone.num_query_heads, d_ff=backbone.intermediate_dim, dropout_rate=0.0,
            use_rmsnorm=True, use_swiglu=True, use_rope=True,
            tie_embeddings=bool(backbone.tie_word_embeddings),
            num_kv_heads=(backbone.num_key_value_heads
                          if backbone.num_key_value_heads != backbone.num_query_heads else None),
            rope_theta=float(backbone.rope_max_wavelength), rope_scaling=scaling,
            norm_epsilon=float(backbone.layer_norm_epsilon),
        )
        return "llama3", cfg
    if isinstance(backbone, keras_hub.models.MistralBackbone):
        return "mistral", _mistral_config(backbone, seq_len or 2048)
    if isinstance(backbone, keras_hub.models.GPT2Backbone):
        cfg = ModelConfig(
            vocab_size=backbone.vocabulary_size,
            seq_len=min(seq_len or backbone.max_sequence_length, backbone.max_sequence_length),
            d_model=backbone.hidden_dim, num_layers=backbone.num_layers,
            num_heads=backbone.num_heads, d_ff=backbone.intermediate_dim, dropout_rate=0.0,
            activation="gelu_tanh", use_rmsnorm=False, use_swiglu=False, use_rope=False,
            tie_embeddings=True, use_bias=True,
        )
        return "gpt2", cfg
    raise ConfigError(
        f"kerastrain cannot fine-tune a {type(backbone).__name__}; supported: Llama 3 "
        "(LlamaForCausalLM), Mistral (MistralForCausalLM) and GPT-2 (GPT2LMHeadModel) folders"
    )


def _mistral_config(backbone, seq_len: int) -> ModelConfig:
    """Mistral is Llama (untied, grouped-query) with a sliding attention window: within
    ``seq_len <= sliding_window`` every query sees every earlier key, exactly as ours does."""
    window = backbone.sliding_window
    if window is not None and seq_len > window:
        raise ConfigError(f"this Mistral model attends within a sliding window of {window} tokens, "
                          f"which kerastrain's GPT does not have; train with --seq-len {window} or less")
    if backbone.rope_scaling_factor not in (None, 1.0):
        raise ConfigError("this Mistral model needs RoPE position scaling, which kerastrain's GPT "
                          "does not have; it cannot be fine-tuned here")
    if backbone.head_dim not in (None, backbone.hidden_dim // backbone.num_query_heads):
        raise ConfigError(f"this Mistral model's head size {backbone.head_dim} is not hidden size / "
                          "heads, which kerastrain's GPT needs; it cannot be fine-tuned here")
    return ModelConfig(
        vocab_size=backbone.vocabulary_size, seq_len=seq_len, d_model=backbone.hidden_dim,
        num_layers=backbone.num_layers, num_heads=backbone.num_query_heads,
        d_ff=backbone.intermediate_dim, dropout_rate=0.0, use_rmsnorm=True, use_swiglu=True,
        use_rope=True, tie_embeddings=False,
        num_kv_heads=(backbone.num_key_value_heads
                      if backbone.num_key_value_heads != backbone.num_query_heads else None),
        rope_theta=float(backbone.rope_max_wavelength),
        norm_epsilon=float(backbone.layer_norm_epsilon),
    )


def load_from_keras_hub(gpt, backbone, architecture: str) -> None:
    """Copy ``backbone``'s weights into our ``gpt`` (built by ``config_from_keras_hub``'s config)."""
    if architecture in ("llama3", "mistral"):  # the same layer layout in keras-hub
        pairs = _pairs_llama3(gpt, backbone)
    else:
        pairs, biases = _pairs_gpt2(gpt, backbone)
        if any(np.any(np.asarray(b.value) != 0) for b in biases):
            raise ConfigError(
                "this GPT-2 model has non-zero biases in its projections; kerastrain's GPT has no "
                "biases, so it cannot be fine-tuned here"
            )
    for ours, theirs in pairs:
        target = _target(ours)
        value = np.asarray(theirs.value)
        if architecture == "gpt2" and theirs is backbone.position_embedding.position_embeddings:
            value = value[: target.shape[0]]  # we train on --seq-len positions of the table
        target.assign(value.reshape(tuple(target.shape)))
