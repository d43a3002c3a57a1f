"""Qwen 2 / 2.5, Qwen 3 and Gemma 2 / 3 (text) Hugging Face folders to and from our GPT, exactly.

These families are read and written here, straight from ``config.json`` and safetensors by the
transformers parameter names, not through keras-hub's converters: keras-hub 0.32's backbones
drop what the GPT must know (Gemma 2's RoPE base and norm epsilon; ``query_pre_attn_scalar``
becomes a boolean; Gemma 3 hard-codes layers ``i % 6 < 5`` as local with RoPE bases 10k / 1M,
whatever ``layer_types`` says: on a 3-layer folder whose last layer is global its logits are
1.9 away from transformers' definition, ours 2e-6), and it has no Qwen 3 exporter. One table of names serves all
four families in both directions. (Llama, Mistral and GPT-2 keep going through keras-hub:
:mod:`kerastrain.model.keras_hub_mapping`.)

Layouts: transformers' ``Linear`` weights are ``(out, in)``, our Dense kernels ``(in, out)``:
a transpose, nothing else (heads are contiguous column blocks in both). Gemma's RMSNorm
multiplies by ``1 + w``: our RMSNorm's scale holds ``1 + w`` (added on import, subtracted on
export), so training, LoRA, the mesh and the planner see a plain RMSNorm. Gemma's
``layer_types`` become ``sliding_window_pattern`` (every Nth layer global).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.errors import CheckpointError, ConfigError

FAMILIES = {  # our architecture name -> (model_type, transformers class)
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
}
GEMMA = ("gemma2", "gemma3")
# What each family fixes ("required") or may hold (the rest must keep the Llama default).
_REQUIRED = {
    "qwen2": dict(qkv_bias=True),
    "qwen3": dict(qk_norm=True),
    "gemma2": dict(glu_activation="gelu_tanh", scale_embeddings=True, post_norms=True,
                   tie_embeddings=True),
    "gemma3": dict(glu_activation="gelu_tanh", scale_embeddings=True, post_norms=True,
                   tie_embeddings=True, qk_norm=True),
}
_HOLDS = {
    "qwen2": {"num_kv_heads", "rope_theta", "norm_epsilon", "tie_embeddings"},
    "qwen3": {"num_kv_heads", "rope_theta", "norm_epsilon", "tie_embeddings", "head_dim"},
    "gemma2": {"num_kv_heads", "rope_theta", "norm_epsilon", "head_dim", "attn_softcap",
               "final_softcap", "query_pre_attn_scalar", "sliding_window",
               "sliding_window_pattern"},
    "gemma3": {"num_kv_heads", "rope_theta", "norm_epsilon", "head_dim", "attn_softcap",
               "final_softcap", "query_pre_attn_scalar", "sliding_window",
               "sliding_window_pattern", "rope_local_theta", "rope_scaling"},
}
_SWITCHES = ("qkv_bias", "qk_norm", "glu_activation", "scale_embeddings", "post_norms",
             "head_dim", "attn_softcap", "final_softcap", "query_pre_attn_scalar",
             "sliding_window", "sliding_window_pattern", "rope_local_theta", "rope_scaling",
             "use_bias")


def problems(cfg: ModelConfig, family: str) -> list[str]:
    """What ``cfg`` has that ``family`` cannot hold (empty: it exports exactly)."""
    found = []
    if not (cfg.use_rmsnorm and cfg.use_swiglu and cfg.use_rope):
        found.append(f"{family} needs RMSNorm, a gated MLP and RoPE")
    default = ModelConfig()
    for name in _SWITCHES:
        value, wanted = getattr(cfg, name), _REQUIRED[family].get(name)
        if wanted is not None and value != wanted:
            found.append(f"{name}={value!r} ({family} has {wanted!r})")
        elif wanted is None and name not in _HOLDS[family] and value != getattr(default, name):
            found.append(f"{name}={value!r}")
    if cfg.rope_scaling and cfg.rope_scaling.get("rope_type") != "linear":
        found.append("Llama 3 RoPE scaling")
    return found


def check_folder(path: Path) -> dict:
    """``config.json`` of a Hugging Face folder, refused when it needs custom code (``auto_map``)
    or holds pickled weights only (:func:`kerastrain.model.folder_checks.refuse_unsafe_folder`),
    or no weights at all."""
    from kerastrain.model.folder_checks import refuse_unsafe_folder

    refuse_unsafe_folder(path)
    config = json.loads((path / "config.json").read_text())
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(f"{path} holds no weights; kerastrain reads *.safetensors only "
                              "(download the safetensors revision of the model)")
    return config


def _layer_pattern(config: dict, default: int | None) -> int | None:
    """Gemma's ``layer_types`` as "every Nth layer is global" (None: every layer is local)."""
    types = config.get("layer_types")
    if not types:
        return default
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    if not full:
        return None
    n = full[0] + 1
    if any(((i + 1) % n == 0) != (t == "full_attention") for i, t in enumerate(types)):
        raise ConfigError(f"layer_types {types} is not one global layer every N; kerastrain's "
                          "GPT cannot hold it")
    return n


def config_from_hf(family: str, config: dict, seq_len: int) -> ModelConfig:
    """The GPT configuration computing what the transformers model of ``config`` computes."""
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling")
    act = config.get("hidden_activation") or config.get("hidden_act")
    gemma = family in GEMMA
    if act != ("gelu_pytorch_tanh" if gemma else "silu"):
        raise ConfigError(f"this {family} model uses the activation {act!r}, which kerastrain's "
                          "GPT does not have")
    if config.get("attention_bias"):
        raise ConfigError(f"this {family} model has biases on every attention projection; "
                          "kerastrain's GPT has them on q/k/v only (Qwen 2)")
    if scaling and not (family == "gemma3" and scaling.get("rope_type") == "linear"):
        raise ConfigError(f"this {family} model needs RoPE scaling {scaling.get('rope_type')!r}, "
                          "which kerastrain's GPT does not have")
    window = config.get("sliding_window")
    fields = dict(
        vocab_size=config["vocab_size"], seq_len=seq_len, d_model=config["hidden_size"],
        num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
        d_ff=config["intermediate_size"], dropout_rate=0.0, use_rmsnorm=True, use_swiglu=True,
        use_rope=True, tie_embeddings=bool(config.get("tie_word_embeddings", gemma)),
        num_kv_heads=config.get("num_key_value_heads"),
        rope_theta=float(rope.get("rope_theta", config.get(  # transformers' defaults
            "rope_theta", 1e6 if family == "gemma3" else 10000.0))),
        norm_epsilon=float(config.get("rms_norm_eps", 1e-6)))
    if gemma and not fields["tie_embeddings"]:
        raise ConfigError(f"this {family} model has an untied output head, which Gemma's "
                          "definition does not; the folder is not a Gemma")
    fields.update(_REQUIRED[family])
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != config["hidden_size"] // config["num_attention_heads"]:
        fields["head_dim"] = head_dim
    if fields["num_kv_heads"] == fields["num_heads"]:
        fields["num_kv_heads"] = None
    if family == "qwen2" and config.get("use_sliding_window") and window and seq_len > window:
        raise ConfigError(f"this Qwen 2 model attends within a sliding window of {window} "
                          f"tokens in some layers; train with --seq-len {window} or less")
    if gemma:
        fields.update(attn_softcap=config.get("attn_logit_softcapping"),
                      final_softcap=config.get("final_logit_softcapping"),
                      query_pre_attn_scalar=float(config.get("query_pre_attn_scalar", 256)),
                      sliding_window=window,
                      sliding_window_pattern=_layer_pattern(
                          config, 2 if family == "gemma2" else config.get("sliding_window_pattern", 6)))
        if family == "gemma3":
            fields["rope_local_theta"] = float(config.get("rope_local_base_freq", 10000.0))
            if scaling:
                fields["rope_scaling"] = {"rope_type": "linear", "factor": float(scaling["factor"])}
    return ModelConfig(**fields)


def _names(gpt, family: str) -> list[tuple[object, str, str]]:
    """(our variable or Dense layer, transformers name, kind) for every weight; kind: "linear"
    (transposed), "norm" (Gemma: 1 + w), "plain"."""
    cfg = gpt.config
    norm = "norm" if family in GEMMA else "plain"
    rows = [(gpt.token_embedding.embeddings, "model.embed_tokens.weight", "plain")]
    if not cfg.tie_embeddings:
        rows.append((gpt.token_embedding.reverse_embeddings, "lm_head.weight", "linear"))
    for i, block in enumerate(gpt.blocks):
        p, attn, mlp = f"model.layers.{i}.", block.attention, block.mlp
        rows += [(attn.query, p + "self_attn.q_proj.weight", "linear"),
                 (attn.key, p + "self_attn.k_proj.weight", "linear"),
                 (attn.value, p + "self_attn.v_proj.weight", "linear"),
                 (attn.output_projection, p + "self_attn.o_proj.weight", "linear"),
                 (mlp.gate, p + "mlp.gate_proj.weight", "linear"),
                 (mlp.up, p + "mlp.up_proj.weight", "linear"),
                 (mlp.down, p + "mlp.down_proj.weight", "linear"),
                 (block.attention_norm.scale, p + "input_layernorm.weight", norm)]
        if cfg.qkv_bias:
            rows += [(d.bias, p + f"self_attn.{n}_proj.bias", "plain")
                     for d, n in ((attn.query, "q"), (attn.key, "k"), (attn.value, "v"))]
        if cfg.qk_norm:
            rows += [(attn.query_norm.scale, p + "self_attn.q_norm.weight", norm),
                     (attn.key_norm.scale, p + "self_attn.k_norm.weight", norm)]
        if family in GEMMA:
            rows += [(block.post_attention_norm.scale, p + "post_attention_layernorm.weight", norm),
                     (block.mlp_norm.scale, p + "pre_feedforward_layernorm.weight", norm),
                     (block.post_mlp_norm.scale, p + "post_feedforward_layernorm.weight", norm)]
        else:
            rows.append((block.mlp_norm.scale, p + "post_attention_layernorm.weight", norm))
    rows.append((gpt.final_norm.scale, "model.norm.weight", norm))
    return rows


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files, as float32 numpy (bfloat16 included)."""
    from safetensors import safe_open

    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="flax") as handle:
                for name in handle.keys():
                    tensors[name] = np.asarray(handle.get_tensor(name), np.float32)
        except Exception as exc:  # a truncated or foreign file: a broken download
            raise CheckpointError(f"cannot read {file} ({type(exc).__name__}: {exc}); "
                                  "download it again") from exc
    return tensors


def load_hf_weights(gpt, path: Path, family: str) -> None:
    """Copy the folder's weights into ``gpt`` (built from :func:`config_from_hf`'s config)."""
    from kerastrain.model.keras_hub_mapping import _target

    tensors = read_tensors(Path(path))
    for ours, name, kind in _names(gpt, family):
        if name not in tensors:
            raise CheckpointError(f"{path} has no weight {name}; the folder is incomplete")
        value = tensors[name]
        value = value.T if kind == "linear" else value + 1.0 if kind == "norm" else value
        target = _target(ours)
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(f"{path}: {name} has shape {value.shape}, config.json says "
                                  f"{tuple(target.shape)}")
        target.assign(value)


def hf_config(cfg: ModelConfig, family: str, eos_id: int | None = None) -> dict:
    """The transformers ``config.json`` of a GPT held by ``family``."""
    from kerastrain.model.gpt import norm_epsilon

    model_type, cls = FAMILIES[family]
    config = dict(
        architectures=[cls], model_type=model_type, vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        head_dim=cfg.attention_head_dim, rms_norm_eps=norm_epsilon(cfg), rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.seq_len,
        attention_dropout=0.0, torch_dtype="float32", bos_token_id=eos_id, eos_token_id=eos_id,
        rope_scaling=None)
    if family in GEMMA:
        local = [i for i in range(cfg.num_layers) if cfg.sliding_window is not None and (
            cfg.sliding_window_pattern is None or (i + 1) % cfg.sliding_window_pattern)]
        config.update(
            hidden_activation="gelu_pytorch_tanh", attention_bias=False,
            query_pre_attn_scalar=cfg.query_pre_attn_scalar or cfg.attention_head_dim,
            attn_logit_softcapping=cfg.attn_softcap, final_logit_softcapping=cfg.final_softcap,
            sliding_window=cfg.sliding_window or cfg.seq_len,  # no window: one the length
            layer_types=["sliding_attention" if i in local else "full_attention"
                         for i in range(cfg.num_layers)])
        if family == "gemma3":
            config.update(rope_local_base_freq=cfg.rope_local_theta or cfg.rope_theta,
                          rope_scaling=cfg.rope_scaling)
    else:
        config.update(hidden_act="silu", use_sliding_window=False, sliding_window=None,
                      max_window_layers=cfg.num_layers, attention_bias=False)
    return config


def write_hf(gpt, family: str, target: Path, eos_id: int | None = None) -> None:
    """``config.json`` and ``model.safetensors`` (float32, LoRA merged) of ``gpt`` in ``target``."""
    from safetensors.numpy import save_file

    from kerastrain.model.keras_hub_mapping import _value

    tensors = {}
    for ours, name, kind in _names(gpt, family):
        value = _value(ours).astype(np.float32)
        value = value.T if kind == "linear" else value - 1.0 if kind == "norm" else value
        tensors[name] = np.ascontiguousarray(value)
    save_file(tensors, str(Path(target) / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(gpt.config, family, eos_id)
    (Path(target) / "config.json").write_text(json.dumps(config, indent=2) + "\n")
