"""Tiny random Hugging Face folders of Qwen 2, Qwen 3, Gemma 2 and Gemma 3 (text), and a float64
numpy forward written from transformers' modeling files (``modeling_llama/mistral/qwen2/qwen3/
gemma2/gemma3``):
the reference our import and export are held to. It reads only ``config.json`` and the
safetensors, so it shares no code with kerastrain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerastrain.data.tokenizer import BPETokenizer, train_byte_level_bpe

# Shapes small enough for CI, with grouped-query attention, a head size that is not
# d_model / heads (Qwen 3, Gemma) and windows shorter than the test sequences.
CONFIGS = {
    "qwen2": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_act="silu",
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  use_sliding_window=False, sliding_window=4096, max_window_layers=2),
    "qwen3": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_act="silu",
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, head_dim=16,
                  attention_bias=False, use_sliding_window=False, sliding_window=None,
                  max_window_layers=2),
    "gemma2": dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"],
                   hidden_activation="gelu_pytorch_tanh", rope_theta=10000.0, rms_norm_eps=1e-6,
                   head_dim=16, query_pre_attn_scalar=12, attn_logit_softcapping=5.0,
                   final_logit_softcapping=3.0, sliding_window=6),
    "gemma3": dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
                   hidden_activation="gelu_pytorch_tanh", rope_theta=1e6, rms_norm_eps=1e-6,
                   head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
                   rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
                   layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
}
# SmolLM 2 is a LlamaForCausalLM (tied, RoPE base 1e5): it loads through the llama3 family.
SMOLLM2 = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu",
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, head_dim=8,
               attention_bias=False, mlp_bias=False, rope_scaling=None)
SHAPE = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2)
LAYERS = {"qwen2": 2, "qwen3": 2, "gemma2": 2, "gemma3": 3}
TEXTS = ["The quick brown fox jumps over the lazy dog. ",
         "Qwen and Gemma folders import, train and export back with the same logits. "] * 30


def _shapes(config: dict) -> dict[str, tuple]:
    d, ff = config["hidden_size"], config["intermediate_size"]
    hd = config.get("head_dim") or d // config["num_attention_heads"]
    q, kv = hd * config["num_attention_heads"], hd * config["num_key_value_heads"]
    gemma = config["model_type"].startswith("gemma")
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], d), "model.norm.weight": (d,)}
    if not config.get("tie_word_embeddings", gemma):
        shapes["lm_head.weight"] = (config["vocab_size"], d)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
                       p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d),
                       p + "mlp.down_proj.weight": (d, ff), p + "input_layernorm.weight": (d,),
                       p + "post_attention_layernorm.weight": (d,)})
        if config["model_type"] == "qwen2":
            shapes.update({p + f"self_attn.{n}_proj.bias": (w,) for n, w in
                           (("q", q), ("k", kv), ("v", kv))})
        if config["model_type"] in ("qwen3", "gemma3_text"):
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
        if gemma:
            shapes.update({p + "pre_feedforward_layernorm.weight": (d,),
                           p + "post_feedforward_layernorm.weight": (d,)})
    return shapes


def write_folder(root: Path, family: str, seed: int = 0) -> Path:
    """A random ``family`` folder (config.json, model.safetensors, tokenizer.json) in ``root``."""
    from safetensors.numpy import save_file

    tokenizer = BPETokenizer(train_byte_level_bpe(TEXTS, 300))
    # Qwen pads its embedding table past the tokenizer (151,936 rows for 151,665 tokens).
    rows = tokenizer.vocab_size + (12 if family.startswith("qwen") else 0)
    config = {**(SMOLLM2 if family == "smollm2" else CONFIGS[family]), **SHAPE,
              "num_hidden_layers": LAYERS.get(family, 2),
              "vocab_size": rows, "max_position_embeddings": 64}
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in _shapes(config).items():
        if name.endswith("norm.weight"):  # Gemma's norms multiply by 1 + w
            centre = 0.0 if family.startswith("gemma") else 1.0
            value = centre + rng.normal(0, 0.2, shape)
        else:
            value = rng.normal(0, 0.25 if name.endswith("bias") else 0.15, shape)
        tensors[name] = value.astype(np.float32)
    folder = Path(root) / f"{family}-hf"
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save(folder / "tokenizer.json")
    return folder


def _rms(x, w, eps, gemma):
    normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return normed * ((1.0 + w) if gemma else w)


def _rope(x, positions, theta, factor=1.0):
    """Rotate-half RoPE of (batch, seq, heads, dim); linear scaling divides the frequencies."""
    dim = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim) / factor
    angles = np.concatenate([np.outer(positions, inv)] * 2, axis=-1)[None, :, None, :]
    half = dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(angles) + rotated * np.sin(angles)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def reference_logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    """transformers' forward of the folder's model on ``ids`` (batch, seq), in float64."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    c = json.loads((folder / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    kind = c["model_type"]
    gemma = kind.startswith("gemma")
    eps, heads, kv_heads = c["rms_norm_eps"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or c["hidden_size"] // heads
    layers = c["num_hidden_layers"]
    types = c.get("layer_types") or [  # Mistral: every layer within its window, if it has one
        "sliding_attention" if gemma and (i + 1) % (2 if kind == "gemma2" else
                                                   c.get("sliding_window_pattern", 6))
        or kind == "mistral" and c.get("sliding_window") else "full_attention"
        for i in range(layers)]
    x = w["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * np.sqrt(c["hidden_size"])
    batch, seq = ids.shape
    pos = np.arange(seq)
    scale = c["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    for i in range(layers):
        p = f"model.layers.{i}."

        def lin(h, name, p=p):
            out = h @ w[p + name + ".weight"].T
            return out + w[p + name + ".bias"] if p + name + ".bias" in w else out

        h = _rms(x, w[p + "input_layernorm.weight"], eps, gemma)
        q = lin(h, "self_attn.q_proj").reshape(batch, seq, heads, hd)
        k = lin(h, "self_attn.k_proj").reshape(batch, seq, kv_heads, hd)
        v = lin(h, "self_attn.v_proj").reshape(batch, seq, kv_heads, hd)
        if p + "self_attn.q_norm.weight" in w:
            q = _rms(q, w[p + "self_attn.q_norm.weight"], eps, gemma)
            k = _rms(k, w[p + "self_attn.k_norm.weight"], eps, gemma)
        sliding = types[i] == "sliding_attention"
        theta, factor = c["rope_theta"], 1.0
        if kind == "gemma3_text" and sliding:
            theta = c["rope_local_base_freq"]
        elif c.get("rope_scaling"):
            factor = c["rope_scaling"]["factor"]
        q, k = _rope(q, pos, theta, factor), _rope(k, pos, theta, factor)
        k = np.repeat(k, heads // kv_heads, axis=2)
        v = np.repeat(v, heads // kv_heads, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
        if c.get("attn_logit_softcapping"):
            cap = c["attn_logit_softcapping"]
            scores = np.tanh(scores / cap) * cap
        gap = pos[:, None] - pos[None, :]
        allowed = (gap >= 0) & ((gap < c["sliding_window"]) if sliding else True)
        scores = np.where(allowed, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, seq, heads * hd)
        attn = lin(attn, "self_attn.o_proj")
        if gemma:
            x = x + _rms(attn, w[p + "post_attention_layernorm.weight"], eps, gemma)
            h = _rms(x, w[p + "pre_feedforward_layernorm.weight"], eps, gemma)
        else:
            x = x + attn
            h = _rms(x, w[p + "post_attention_layernorm.weight"], eps, gemma)
        act = _gelu_tanh if gemma else (lambda z: z / (1 + np.exp(-z)))
        mlp = lin(act(lin(h, "mlp.gate_proj")) * lin(h, "mlp.up_proj"), "mlp.down_proj")
        if gemma:
            mlp = _rms(mlp, w[p + "post_feedforward_layernorm.weight"], eps, gemma)
        x = x + mlp
    x = _rms(x, w["model.norm.weight"], eps, gemma)
    logits = x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T
    if c.get("final_logit_softcapping"):
        cap = c["final_logit_softcapping"]
        logits = np.tanh(logits / cap) * cap
    return logits
