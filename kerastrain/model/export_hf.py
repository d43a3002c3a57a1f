"""``kerastrain export``: a trained model as a Hugging Face folder or a keras-hub preset.

The first family of the table (:mod:`kerastrain.model.families`) that holds the model's options
writes it as a Hugging Face folder by name (:mod:`kerastrain.model.hf_weights`: ``config.json``
and ``model.safetensors``, LoRA merged); we add our tokenizer (our ``tokenizer.json`` already is
a Hugging Face fast tokenizer), its EOS id and ``generation_config.json``. The keras-hub preset
format is keras-hub's reading of that folder (its own converter, given what it drops) saved with
its ``save_to_preset``, for the families whose entry names keras-hub as a target.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kerastrain.errors import ConfigError
from kerastrain.model.hub import causal_lm, require_keras_hub

FORMATS = ("hf", "keras-hub")


def _prepare_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--to {target} is a file; name a directory")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise ConfigError(f"--to {target} is not empty; choose a new directory or pass --overwrite")
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)


def _hf_tokenizer(tokenizer):
    """Our tokenizer's HF ``tokenizers.Tokenizer``; only BPE tokenizers have one."""
    hf = getattr(tokenizer, "hf", None)
    if hf is None or getattr(tokenizer, "eos_id", None) is None:
        raise ConfigError(
            f"the model's {getattr(tokenizer, 'kind', '?')!r} tokenizer has no Hugging Face form; "
            "export needs a model trained with --tokenizer bpe"
        )
    return hf


def write_hf_tokenizer(tokenizer, target: Path, seq_len: int, template=None) -> None:
    """``tokenizer.json`` (ours, a fast tokenizer) + ``tokenizer_config.json`` with its EOS and,
    for a model fine-tuned on chat data, the chat ``template`` with the special tokens it was
    rendered with: transformers' ``apply_chat_template`` on the folder then gives the ids the
    model was trained on."""
    from kerastrain.data.tokenizer import EOS_TOKEN as DEFAULT_EOS

    EOS_TOKEN = getattr(tokenizer, "eos_token", DEFAULT_EOS)  # noqa: N806 - a pretrained one's
    _hf_tokenizer(tokenizer).save(str(target / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": None,
        "pad_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": seq_len,
        "clean_up_tokenization_spaces": False,
    }
    if template is not None:
        config.update(template.variables)  # bos_token ... as the training data was rendered
        config["chat_template"] = template.source
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": config["bos_token"], "eos_token": config["eos_token"]}
    (target / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _write_generation_config(target: Path, cfg, eos_id: int, stop_ids: tuple[int, ...] = ()) -> None:
    """``generation_config.json``; ``stop_ids``: the ids that end a chat model's turn (generation
    stops at any of them)."""
    stops = [eos_id, *(i for i in stop_ids if i != eos_id)]
    generation = {"bos_token_id": eos_id, "eos_token_id": stops if len(stops) > 1 else eos_id,
                  "pad_token_id": eos_id,
                  "max_length": cfg.seq_len}
    (target / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def keras_hub_preprocessor(tokenizer, seq_len: int):
    """A keras-hub preprocessor over our BPE vocabulary and merges (no TensorFlow needed).

    keras-hub's GPT-2 tokenizer is a byte-level BPE with the GPT-2 split pattern and
    ``<|endoftext|>`` as its start and end token: exactly our tokenizer, for either backbone.
    """
    keras_hub = require_keras_hub("kerastrain export")

    if getattr(tokenizer, "eos_token", "<|endoftext|>") != "<|endoftext|>":
        raise ConfigError(f"the keras-hub format needs an <|endoftext|> tokenizer, this one ends "
                          f"with {tokenizer.eos_token}; export with --format hf")
    data = json.loads(_hf_tokenizer(tokenizer).to_str())
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    kh_tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=data["model"]["vocab"], merges=merges)
    return keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer=kh_tokenizer, sequence_length=seq_len, add_start_token=False
    )


def _record_tied_embeddings(target: Path, tied: bool) -> None:
    """keras-hub 0.32's ``LlamaBackbone.get_config`` omits ``tie_word_embeddings``, so a tied
    backbone saved to a preset reloads untied and fails to load its weights; write it in."""
    for name in ("config.json", "task.json"):  # the backbone's config, alone and in the task's
        path = target / name
        config = json.loads(path.read_text())
        backbone = config if name == "config.json" else config["config"]["backbone"]
        backbone["config"]["tie_word_embeddings"] = bool(tied)
        path.write_text(json.dumps(config, indent=4) + "\n")


def _keras_hub_backbone(model, family, kwargs: dict):
    """keras-hub's backbone read from the model's Hugging Face folder, in float32."""
    import tempfile

    import keras

    from kerastrain.model.hf_weights import write_hf

    keras_hub = require_keras_hub("kerastrain export")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        with tempfile.TemporaryDirectory(prefix="kerastrain-export-") as folder:
            write_hf(model, family, Path(folder))
            return keras_hub.models.Backbone.from_preset(folder, dtype="float32", **kwargs)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def export_model(source: str | Path, target: str | Path, fmt: str = "hf",
                 overwrite: bool = False) -> dict:
    """Export the model in ``source`` (an output or checkpoint directory) to ``target``.

    Returns a summary: format, architecture (the family), files written.
    """
    from kerastrain.model.families import export_family
    from kerastrain.model.hf_weights import write_hf
    from kerastrain.model.loading import chat_template_of, load

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, tokenizer = load(source)
    template = chat_template_of(source)
    stops = template.turn_end_ids(tokenizer) if template is not None else ()
    family = export_family(model.config)  # refuse before anything is written
    _hf_tokenizer(tokenizer)
    target = Path(target)
    if fmt == "keras-hub":
        if family.keras_hub is None:
            raise ConfigError(f"this model is a {family.name}, which kerastrain exports with "
                              "--format hf only")
        kwargs = family.keras_hub(model.config)
        preprocessor = keras_hub_preprocessor(tokenizer, model.config.seq_len)
        backbone = _keras_hub_backbone(model, family, kwargs)
        _prepare_target(target, overwrite)
        causal_lm(backbone, preprocessor).save_to_preset(str(target))
        if getattr(backbone, "tie_word_embeddings", None) is not None:
            _record_tied_embeddings(target, backbone.tie_word_embeddings)
    else:
        _prepare_target(target, overwrite)
        write_hf(model, family, target, tokenizer.eos_id)
        _write_generation_config(target, model.config, tokenizer.eos_id, stops)
        write_hf_tokenizer(tokenizer, target, model.config.seq_len, template)
    return {"format": fmt, "architecture": family.name, "to": str(target),
            "files": sorted(p.name for p in target.iterdir())}
