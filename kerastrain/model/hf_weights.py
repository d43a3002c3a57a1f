"""Hugging Face folders to and from our GPT, exactly, as the family table says
(:mod:`kerastrain.model.families`): ``config.json`` by its keys, safetensors by their names.

No keras-hub in the path: keras-hub 0.32's converters drop what the GPT must know (Llama's
``rms_norm_eps``, Gemma 2's RoPE base; Gemma 3's layer pattern is hard-coded; Mistral's weights
are rounded to float16) and it has no Qwen 3 exporter.

Layouts: transformers' ``Linear`` weights are ``(out, in)``, our Dense kernels ``(in, out)``: a
transpose, nothing else (heads are contiguous column blocks in both); GPT-2's ``Conv1D`` already
is ``(in, out)``. Fused tensors (GPT-2's ``c_attn``) are ours side by side along the output axis.
Gemma's RMSNorm multiplies by ``1 + w``: our scale holds ``1 + w`` (added on import, subtracted on
export), so training, LoRA, the mesh and the planner see a plain RMSNorm. Every weight of the GPT
must be named by the entry, both ways: an incomplete entry is an error, not a silent default.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.errors import CheckpointError, ConfigError
from kerastrain.model.families import _MISSING, Family, Key, Weight


def check_folder(path: Path) -> dict:
    """``config.json`` of a Hugging Face folder, refused when it needs custom code (``auto_map``)
    or holds pickled weights only (:func:`kerastrain.model.folder_checks.refuse_unsafe_folder`),
    or no weights at all (a keras-hub preset, without ``model_type``, holds its own format)."""
    from kerastrain.model.folder_checks import refuse_unsafe_folder

    refuse_unsafe_folder(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {exc}") from exc
    if "model_type" in config and not any(path.glob("*.safetensors")):
        raise CheckpointError(f"{path} holds no weights; kerastrain reads *.safetensors only "
                              "(download the safetensors revision of the model)")
    return config


def _value_of(key: Key, config: dict):
    for name in key.names:
        if name in config:
            return config[name]
    return _MISSING


def _rope_keys(config: dict) -> dict:
    """transformers 5 writes RoPE as ``rope_parameters`` (per layer type for Gemma 3): read it as
    the keys transformers 4 wrote (``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``)."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict):
        return config
    config, full = dict(config), rope.get("full_attention", rope)
    found = {"rope_theta": full.get("rope_theta"),
             "rope_local_base_freq": rope.get("sliding_attention", {}).get("rope_theta"),
             "rope_scaling": full if full.get("rope_type", "default") != "default" else None}
    for key, value in found.items():
        if config.get(key) is None and value is not None:
            config[key] = value
    return config


def config_from_hf(family: Family, config: dict, seq_len: int) -> ModelConfig:
    """The GPT configuration computing what the transformers model of ``config`` computes."""
    config = _rope_keys(config)
    fields = {"seq_len": seq_len, "dropout_rate": 0.0, **family.sets}
    for key in family.keys:
        raw = _value_of(key, config)
        if key.field is None:  # a constant: another value is a model we cannot hold
            if key.write is None and raw is not _MISSING and raw != key.const:
                raise ConfigError(f"this {family.name} model has {key.names[0]}={raw!r}, which "
                                  "kerastrain's GPT does not have")
            continue
        value = key.default if raw is _MISSING or raw is None else raw
        if key.values is not None:
            if value not in key.values:
                raise ConfigError(f"this {family.name} model uses {key.names[0]}={value!r}, which "
                                  "kerastrain's GPT does not have")
            value = key.values[value]
        elif key.read is not None:
            try:
                value = key.read(value, fields)
            except ConfigError as exc:
                raise ConfigError(f"this {family.name} model needs {exc}") from None
        if value is None and ModelConfig.__dataclass_fields__[key.field].default is not None:
            raise ConfigError(f"this {family.name} folder's config.json has no {key.names[0]}")
        fields[key.field] = value
    for name, wanted in family.switches.items():
        if name in fields and fields[name] != wanted:
            raise ConfigError(f"this {family.name} model has {name}={fields[name]!r} where the "
                              f"{family.name} definition has {wanted!r}; it is not a {family.name}")
    if family.check is not None:
        family.check(config, fields)
    fields.update(family.switches)
    cfg = ModelConfig(**fields)
    return cfg.replace(  # spelt-out defaults: grouped-query heads and head size only when they differ
        num_kv_heads=None if cfg.num_kv_heads == cfg.num_heads else cfg.num_kv_heads,
        head_dim=None if cfg.head_dim == cfg.d_model // cfg.num_heads else cfg.head_dim)


def hf_config(cfg: ModelConfig, family: Family, eos_id: int | None = None) -> dict:
    """The transformers ``config.json`` of a GPT held by ``family``."""
    config = {"architectures": [family.hf_class], "model_type": family.model_types[0]}
    for key in family.keys:
        if key.write is not None:
            value = key.write(cfg)
        elif key.field is None:
            value = key.const
        else:
            value = getattr(cfg, key.field)
            if key.values is not None:
                value = next(hf for hf, ours in key.values.items() if ours == value)
        config[key.names[0]] = value
    config.update(bos_token_id=eos_id, eos_token_id=eos_id, torch_dtype="float32")
    return config


def _resolve(gpt, path: str):
    """(owner, attribute) of a dotted path (``blocks.3.attention.query.kernel``) in the GPT."""
    *parts, attr = path.split(".")
    owner = gpt
    for part in parts:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
        if owner is None:
            return None, attr
    return owner, attr


def _rows(gpt, family: Family) -> list[tuple[Weight, str, list]]:
    """(row, tensor name, [(owner, attribute)...]) for every tensor ``gpt`` has in ``family``."""
    cfg, out = gpt.config, []
    for row in family.weights:
        flag = row.when.lstrip("!")
        if flag and bool(getattr(cfg, flag)) == row.when.startswith("!"):
            continue
        layers = range(cfg.num_layers) if "{i}" in row.hf else [None]
        for i in layers:
            targets = [_resolve(gpt, p.replace("{i}", str(i))) for p in row.paths]
            out.append((row, row.hf.replace("{i}", str(i)), targets))
    return out


def _variable(owner, attr):
    """The variable to read and write: a Dense's base kernel (LoRA adapters sit beside it)."""
    return getattr(owner, "_kernel" if attr == "kernel" else attr, None)


def _shape(owner, attr) -> tuple:
    variable = _variable(owner, attr)
    return (owner.units,) if variable is None else tuple(variable.shape)  # an absent bias


def _read(owner, attr) -> np.ndarray:
    """Our value: a Dense kernel with any LoRA adapter merged; an absent bias is zeros."""
    if attr == "kernel" and getattr(owner, "lora_enabled", False):
        from kerastrain.model.lora import merged_kernel

        return merged_kernel(owner)
    variable = _variable(owner, attr)
    if variable is None:
        return np.zeros(_shape(owner, attr), "float32")
    return np.asarray(variable.value, "float32")


def _covered(gpt, family: Family, touched: set[int], what: str) -> None:
    left = [v.path for v in gpt.weights
            if id(v) not in touched and "lora_kernel" not in v.path]
    if left:
        raise ConfigError(f"the {family.name} entry names no tensor for {len(left)} of the "
                          f"model's weights ({', '.join(left[:3])}); cannot {what} it exactly")


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files, as float32 numpy (bfloat16 included)."""
    from safetensors import safe_open

    tensors = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="flax") as handle:
                for name in handle.keys():
                    tensors[name] = np.asarray(handle.get_tensor(name), np.float32)
        except Exception as exc:  # a truncated or foreign file: a broken download
            raise CheckpointError(f"cannot load the model in {path} ({file.name}: "
                                  f"{type(exc).__name__}: {exc}); download it again") from exc
    return tensors


def load_hf_weights(gpt, path: Path, family: Family) -> None:
    """Copy the folder's weights into ``gpt`` (built from :func:`config_from_hf`'s config)."""
    tensors, touched = read_tensors(Path(path)), set()
    for row, name, targets in _rows(gpt, family):
        value = tensors.get(name, tensors.get(name.removeprefix(family.prefix)))
        if value is None:
            raise CheckpointError(f"{path} has no weight {name}; the folder is incomplete")
        if row.transform == "T":
            value = value.T
        elif row.transform == "+1":
            value = value + 1.0
        shapes = [_shape(owner, attr) for owner, attr in targets]
        pieces = np.split(value, np.cumsum([s[-1] for s in shapes[:-1]]), axis=-1)
        for (owner, attr), piece, shape in zip(targets, pieces, shapes, strict=True):
            if row.head_rows:
                piece = piece[: shape[0]]  # we train on --seq-len positions of the table
            if tuple(piece.shape) != tuple(shape):
                raise CheckpointError(f"{path}: {name} has shape {value.shape}, config.json "
                                      f"says {tuple(shape)}")
            variable = _variable(owner, attr)
            if variable is None:  # a bias the GPT does not have: only zeros fit
                if np.any(piece != 0):
                    raise ConfigError(f"{path}: {name} is not zero, and this model has none")
                continue
            variable.assign(piece)
            touched.add(id(variable))
    _covered(gpt, family, touched, "import")


def write_hf(gpt, family: Family, target: Path, eos_id: int | None = None) -> None:
    """``config.json`` and ``model.safetensors`` (float32, LoRA merged) of ``gpt`` in ``target``."""
    from safetensors.numpy import save_file

    tensors, touched = {}, set()
    for row, name, targets in _rows(gpt, family):
        value = np.concatenate([_read(o, a) for o, a in targets], axis=-1)
        touched |= {id(_variable(owner, attr)) for owner, attr in targets}
        if row.transform == "T":
            value = value.T
        elif row.transform == "+1":
            value = value - 1.0
        tensors[name] = np.ascontiguousarray(value, np.float32)
    _covered(gpt, family, touched, "export")
    save_file(tensors, str(Path(target) / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(gpt.config, family, eos_id)
    (Path(target) / "config.json").write_text(json.dumps(config, indent=2) + "\n")
