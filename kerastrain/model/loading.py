"""``kerastrain.load(path) -> (model, tokenizer)``: a trained model ready for inference.

``path`` is a run's output directory (weights from ``final_checkpoint/``) or one checkpoint
directory inside it (``checkpoint_step_N/``, ``best_checkpoint/`` ...). The model configuration
comes from ``model_config.json`` and the tokenizer from ``tokenizer.json``: the checkpoint's own
copies when it has them, else the output directory's.
"""

from __future__ import annotations

import json
from pathlib import Path

from kerastrain.config import ModelConfig
from kerastrain.errors import CheckpointError
from kerastrain.model.sharded_weights import STATE_DIR, holds_weights, restore_weights

FINAL_CHECKPOINT = "final_checkpoint"


def _find(path: Path) -> tuple[Path, Path]:
    """(output_dir, checkpoint_dir) for an output directory or a checkpoint directory."""
    if holds_weights(path):
        return path.parent, path
    if holds_weights(path / FINAL_CHECKPOINT):
        return path, path / FINAL_CHECKPOINT
    raise CheckpointError(
        f"{path} holds no checkpoint ({STATE_DIR}/) nor {FINAL_CHECKPOINT}/; pass a run's "
        "output directory after training finished, or one of its checkpoint directories"
    )


def read_model_config(output_dir: Path, checkpoint: Path) -> ModelConfig:
    """The model configuration the checkpoint was trained with."""
    # A checkpoint's own copy first: checkpoints are self-contained and may have been moved.
    for candidate in (checkpoint / "model_config.json", output_dir / "model_config.json"):
        if candidate.is_file():
            return ModelConfig.load(candidate)
    run_config = checkpoint / "run_config.json"
    if run_config.is_file():
        return ModelConfig.from_dict(json.loads(run_config.read_text()).get("model", {}))
    raise CheckpointError(f"no model_config.json in {output_dir} (nor run_config.json in {checkpoint})")


def _tokenizer_path(output_dir: Path, checkpoint: Path) -> Path:
    for candidate in (checkpoint / "tokenizer.json", output_dir / "tokenizer.json"):
        if candidate.is_file():
            return candidate
    run_config = checkpoint / "run_config.json"
    if run_config.is_file():
        configured = json.loads(run_config.read_text()).get("tokenizer", {}).get("path")
        if configured and Path(configured).is_file():
            return Path(configured)
    raise CheckpointError(f"no tokenizer.json in {output_dir}; the model cannot read text without it")


def load(path: str | Path, *, with_tokenizer: bool = True):
    """Build the model from its configuration, restore verified weights; returns (model, tokenizer).

    The model is built without LoRA (adapters are folded into their kernels) and in float32, whatever
    the global dtype policy was, so inference does not depend on the training precision.
    """
    import keras

    from kerastrain.model.gpt import build_model

    output_dir, checkpoint = _find(Path(path))
    cfg = read_model_config(output_dir, checkpoint).replace(use_lora=False)
    tokenizer = None
    if with_tokenizer:
        from kerastrain.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(_tokenizer_path(output_dir, checkpoint))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_model(cfg)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    restore_weights(model, checkpoint, rng=False)  # each array onto this device, verified
    return model, tokenizer


def chat_template_of(path: str | Path):
    """The chat template the model at ``path`` was trained with (``chat_template.json`` of its
    checkpoint, else of its output directory), or None for a model trained on plain text."""
    from kerastrain.data.chat_template import template_of_folder

    output_dir, checkpoint = _find(Path(path))
    return template_of_folder(checkpoint) or template_of_folder(output_dir)


def load_model_folder(path: str | Path, seq_len: int):
    """(model, tokenizer) of a Hugging Face or keras-hub model folder (``config.json``, weights,
    ``tokenizer.json``), as ``--init-from`` reads it, in float32, for inference at ``seq_len``."""
    import tempfile

    import keras

    from kerastrain.data.tokenizer import load_tokenizer
    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_import import open_pretrained

    pretrained = open_pretrained(str(path), seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "tokenizer.json"
        staged.write_text(pretrained.tokenizer_json, encoding="utf-8")
        tokenizer = load_tokenizer(staged)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_model(pretrained.config.replace(dropout_rate=0.0, use_lora=False))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    pretrained.load_into(model)
    return model, tokenizer


def load_for_inference(path: str | Path, seq_len: int = 2048):
    """(model, tokenizer, chat template or None) of a run's output directory, one of its
    checkpoints, or a Hugging Face / keras-hub model folder (read at ``seq_len``)."""
    from kerastrain.model.hf_import import is_pretrained_folder

    if Path(path).is_dir() and is_pretrained_folder(str(path)):
        from kerastrain.data.chat_template import template_of_folder
        from kerastrain.model.folder_checks import refuse_unsafe_folder

        refuse_unsafe_folder(path)
        return (*load_model_folder(path, seq_len), template_of_folder(Path(path)))
    template = chat_template_of(path)
    return (*load(path), template)
