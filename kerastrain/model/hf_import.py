"""``--init-from`` a downloaded model folder: Hugging Face (``config.json`` + safetensors) or a
keras-hub preset. No network: a hub id is refused with the command that downloads it.

A Hugging Face folder is read by its family's entry in the table
(:mod:`kerastrain.model.families`, through :mod:`kerastrain.model.hf_weights`): its ``model_type``
picks the entry, which gives the GPT configuration holding the model exactly and copies its
weights in by name. A keras-hub preset is first written as a Hugging Face folder by keras-hub's own
exporter (its format, its code), then read the same way. The tokenizer is the folder's
``tokenizer.json`` (a Hugging Face fast tokenizer; for a keras-hub preset, its byte-level BPE
converted to one), written to the run's tokenizer path so that checkpoints, ``generate`` and
``export`` use it.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kerastrain.config import ModelConfig, RunConfig
from kerastrain.errors import CheckpointError, ConfigError
from kerastrain.model.hub import causal_lm, require_keras_hub

_HUB_ID = re.compile(r"^(hf://)?[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a run keeps from its own options when the model's shape comes from the folder.
_TRAINING_FIELDS = ("seq_len", "dropout_rate", "use_lora", "lora_rank", "mixed_precision")


@dataclass
class PretrainedModel:
    """A folder read: its family's entry and the GPT configuration holding the model."""

    path: Path
    architecture: object  # its kerastrain.model.families.Family
    config: ModelConfig
    tokenizer_json: str  # a Hugging Face fast tokenizer, as JSON text
    hf_folder: Path | None = None  # where the weights are read (a keras-hub preset's conversion)
    _converted: object = None  # keeps that conversion's temporary folder alive

    def load_into(self, model) -> None:
        """Copy the folder's weights into ``model`` (built from :attr:`config`)."""
        from kerastrain.model.hf_weights import load_hf_weights

        load_hf_weights(model, self.hf_folder or self.path, self.architecture)


def is_pretrained_folder(source: str) -> bool:
    """A Hugging Face or keras-hub folder (``config.json``), or something that names one on the
    hub; kerastrain checkpoints have ``state.json`` and ``state/`` and no ``config.json``."""
    path = Path(source)
    if path.is_dir():
        return (path / "config.json").is_file()
    return bool(_HUB_ID.match(source)) and not path.exists()


def _keras_hub_tokenizer_json(path: Path) -> str:
    """A keras-hub preset's byte-level BPE (``assets/tokenizer``: vocabulary.json + merges.txt) as
    a Hugging Face fast tokenizer: the same vocabulary, merges, GPT-2 split and byte mapping."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from kerastrain.data.tokenizer import EOS_CANDIDATES

    try:
        kind = json.loads((path / "tokenizer.json").read_text()).get("class_name")
        vocab = json.loads((path / "assets" / "tokenizer" / "vocabulary.json").read_text())
        lines = (path / "assets" / "tokenizer" / "merges.txt").read_text().splitlines()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} has no readable keras-hub tokenizer ({exc}); kerastrain needs the "
                          "model's own tokenizer to fine-tune it") from exc
    if kind != "GPT2Tokenizer":
        raise ConfigError(f"cannot convert the keras-hub tokenizer {kind} of {path}; use the "
                          "model's Hugging Face folder instead")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t in EOS_CANDIDATES if t in vocab])
    return tok.to_str()


def _preset_as_hf_folder(path: Path) -> tempfile.TemporaryDirectory:
    """A keras-hub preset written as a Hugging Face folder by keras-hub's exporter."""
    import keras

    keras_hub = require_keras_hub("--init-from a keras-hub preset")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        backbone = keras_hub.models.Backbone.from_preset(str(path))
    except Exception as exc:  # safetensors, JSON and shape errors: all mean a broken folder
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load the model in {path} ({type(exc).__name__}: {first}); "
                              "download it again") from exc
    finally:
        keras.mixed_precision.set_global_policy(previous)
    folder = tempfile.TemporaryDirectory(prefix="kerastrain-preset-")
    causal_lm(backbone).export_to_transformers(folder.name)
    return folder


def _check_safetensors(path: Path) -> None:
    """Open every safetensors file's header now: a truncated download fails before training."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="numpy") as handle:
                handle.keys()
        except Exception as exc:
            raise CheckpointError(f"cannot load the model in {path} ({file.name}: "
                                  f"{type(exc).__name__}: {exc}); download it again") from exc


def open_pretrained(source: str, seq_len: int) -> PretrainedModel:
    """Read the folder ``source``'s configuration; its weights load in :meth:`load_into`."""
    from kerastrain.model.families import importing_family
    from kerastrain.model.hf_weights import check_folder, config_from_hf

    path = Path(source)
    if not path.is_dir():
        raise ConfigError(
            f"--init-from {source}: no such folder; kerastrain does not download models. Fetch it "
            f"first (`huggingface-cli download {source.removeprefix('hf://')} --local-dir DIR`) "
            "and pass --init-from DIR"
        )
    config = check_folder(path)  # custom code and pickled weights are refused
    preset = "model_type" not in config  # a keras-hub preset names a backbone class instead
    if not preset:
        importing_family(config["model_type"])  # an unsupported family: one line, first
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(f"{path} has no tokenizer.json (a Hugging Face fast tokenizer); "
                          "kerastrain needs the model's own tokenizer to fine-tune it")
    converted, folder = None, path
    if preset:
        tokenizer_json = _keras_hub_tokenizer_json(path)
        converted = _preset_as_hf_folder(path)
        folder = Path(converted.name)
        config = json.loads((folder / "config.json").read_text())
    else:
        tokenizer_json = (path / "tokenizer.json").read_text(encoding="utf-8")
        _check_safetensors(path)
    family = importing_family(config.get("model_type"))
    return PretrainedModel(path, family, config_from_hf(family, config, seq_len), tokenizer_json,
                           folder, converted)


def adopt_pretrained(config: RunConfig, target: Path, say) -> PretrainedModel:
    """Open ``--init-from``'s folder and stage its tokenizer at ``target`` (the run's tokenizer
    path). The returned model's :attr:`PretrainedModel.config` is the run's model: everything that
    shapes the weights comes from the folder; the run's own ``--seq-len``, dropout, LoRA and
    precision options are kept. The tokenizer must match the embedding table.
    """
    from kerastrain.data.tokenizer import load_tokenizer

    pretrained = open_pretrained(config.train.init_from, config.model.seq_len)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(target.name + ".pretrained.tmp")  # replaces target once it checks out
    staged.write_text(pretrained.tokenizer_json, encoding="utf-8")
    try:
        tokenizer = load_tokenizer(staged)
    except ConfigError:
        staged.unlink()
        raise
    if tokenizer.vocab_size > pretrained.config.vocab_size:
        staged.unlink()
        raise ConfigError(
            f"{pretrained.path}/tokenizer.json has {tokenizer.vocab_size} tokens but the model's "
            f"embedding table has {pretrained.config.vocab_size}; the folder's tokenizer and "
            "weights do not belong together"
        )
    if tokenizer.vocab_size < pretrained.config.vocab_size:
        # Qwen pads its table (151,936 rows for 151,665 tokens): the rows stay, exported back as
        # they are; no text ever maps to them.
        say(f"Note: the embedding table has {pretrained.config.vocab_size} rows for "
            f"{tokenizer.vocab_size} tokens; the extra rows are padding and are kept")
    staged.replace(target)
    keep = {name: getattr(config.model, name) for name in _TRAINING_FIELDS}
    pretrained.config = pretrained.config.replace(**keep)
    m = pretrained.config
    say(f"Pretrained: {pretrained.architecture.name} from {pretrained.path} "
        f"({m.num_layers} layers, d_model {m.d_model}, vocab {m.vocab_size})")
    return pretrained
