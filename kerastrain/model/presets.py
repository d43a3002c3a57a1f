"""Built-in model presets (a plugin like any other) and exact parameter counting.

Each preset is one JSON file (``layers``, ``d_model``, ``heads``, ``d_ff``, ``seq_len``,
``description``) in the repository's ``presets/`` folder, which the wheel ships as
``kerastrain/_presets``. This module must import quickly: no keras here.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl
from kerastrain.validation import PRESET_ALIASES

# Short JSON keys -> ModelConfig fields; other keys that name ModelConfig fields pass through.
_ALIASES = PRESET_ALIASES
PRESET_ORDER = ("nano", "tiny", "small", "medium", "large", "xlarge")


def _preset_files() -> list[tuple[str, str]]:
    """(name, JSON text) for every preset file: packaged copy first, else the repo's folder."""
    try:
        folder = resources.files("kerastrain") / "_presets"
        if folder.is_dir():
            return [(f.name[:-5], f.read_text()) for f in folder.iterdir() if f.name.endswith(".json")]
    except (FileNotFoundError, ModuleNotFoundError):
        pass
    # Editable install / source checkout: presets/ sits beside the package.
    repo = Path(__file__).resolve().parents[2] / "presets"
    if repo.is_dir():
        return [(f.stem, f.read_text()) for f in repo.glob("*.json")]
    return []


def normalize_fields(data: dict) -> dict:
    """A preset's JSON (short or long keys) as ModelConfig fields; unknown keys are dropped.

    ``"architecture": NAME`` takes that registered architecture's switches (e.g. ``gpt2``:
    LayerNorm, tanh GELU, learned positions, biases) so the model exports to it."""
    known = set(ModelConfig.__dataclass_fields__)
    fields = {}
    for key, value in data.items():
        key = _ALIASES.get(key, key)
        if key in known:
            fields[key] = value
    if data.get("architecture"):  # a named architecture's switches, under the preset's own keys
        from kerastrain.model.families import available_families

        found = available_families()
        if data["architecture"] not in found:
            raise ConfigError(f"the preset names architecture {data['architecture']!r}; "
                              f"installed: {', '.join(found)}")
        fields = {**found[data["architecture"]].defaults, **fields}
    return fields


def _order(name: str) -> tuple:
    return (PRESET_ORDER.index(name) if name in PRESET_ORDER else len(PRESET_ORDER), name)


@hookimpl
def register_presets(register):
    for name, text in sorted(_preset_files(), key=lambda item: _order(item[0])):
        data = json.loads(text)
        register(name, normalize_fields(data), description=data.get("description", ""))


def available_presets() -> dict:
    """Every registered preset (built-in and plugins'): name -> ``Registered``, in size order."""
    from kerastrain.plugins import presets

    found = presets()
    return {name: found[name] for name in sorted(found, key=_order)}


def resolve_preset(name: str) -> dict:
    """The ModelConfig fields of preset ``name``; :class:`ConfigError` if no plugin has it."""
    found = available_presets()
    if name not in found:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(found) or 'none'}")
    return normalize_fields(found[name].obj)


def preset_config(name: str, **overrides) -> ModelConfig:
    """A ModelConfig for preset ``name`` (vocab 16000 unless overridden)."""
    return ModelConfig(**{**resolve_preset(name), **overrides})


def count_parameters(cfg: ModelConfig) -> int:
    """The exact number of weights :func:`kerastrain.model.gpt.build_model` creates for ``cfg``.

    Biases only with ``use_bias`` (every projection) or ``qkv_bias`` (Qwen 2: query, key,
    value); q/k norms (``qk_norm``: one head_dim scale each) and the post-branch norms
    (``post_norms``) count too. LoRA adapters (``use_lora``) are not counted: they are added by
    ``apply_lora`` on top of the base model (see :func:`count_lora_parameters`).
    """
    d, ff, hd = cfg.d_model, cfg.d_ff, cfg.attention_head_dim
    norm = d if cfg.use_rmsnorm else 2 * d  # RMSNorm: scale; LayerNorm: gamma + beta
    q = hd * cfg.num_heads  # query (and attention output) width
    kv = hd * (cfg.num_kv_heads or cfg.num_heads)  # key/value width
    attention = 2 * d * q + 2 * d * kv  # query, output; key, value
    mlp = (3 if cfg.use_swiglu else 2) * d * ff
    per_layer = attention + mlp + (4 if cfg.post_norms else 2) * norm
    if cfg.use_bias:  # query, key, value, output; gate and up (d_ff each), down
        per_layer += q + 2 * kv + d + (2 if cfg.use_swiglu else 1) * ff + d
    elif cfg.qkv_bias:
        per_layer += q + 2 * kv
    if cfg.qk_norm:
        per_layer += 2 * hd
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    positions = 0 if cfg.use_rope else cfg.seq_len * d
    return embeddings + positions + cfg.num_layers * per_layer + norm


def count_lora_parameters(cfg: ModelConfig, rank: int | None = None) -> int:
    """Trainable adapter weights that ``apply_lora(model, rank)`` adds (A: in x r, B: r x out)."""
    r = rank or cfg.lora_rank
    d, ff, hd = cfg.d_model, cfg.d_ff, cfg.attention_head_dim
    q, kv = hd * cfg.num_heads, hd * (cfg.num_kv_heads or cfg.num_heads)
    attention = 2 * r * (d + q) + 2 * r * (d + kv)
    mlp = (3 if cfg.use_swiglu else 2) * r * (d + ff)
    return cfg.num_layers * (attention + mlp)
