"""Writers of the checkpoint format before Orbax, for tests only: users have such checkpoints
(``model.weights.h5``, ``lora_state.npz``, ``rng_state.npz``, ``optimizer.npz``,
``pipeline_state.json.gz``) and kerastrain must keep loading and resuming them, but no longer
writes them. What they write is what ``save_checkpoint`` wrote before the change, file for file.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np


def save_legacy_weights(model, path: Path) -> None:
    """``model.save_weights(path)`` plus ``lora_state.npz`` beside it when LoRA is enabled (Keras
    writes a LoRA kernel merged and no adapters)."""
    path = Path(path)
    model.save_weights(path)
    state = {}
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False):
            for var in (layer._kernel, layer.lora_kernel_a, layer.lora_kernel_b):
                state[var.path] = np.asarray(var.value)
    if state:
        np.savez(path.parent / "lora_state.npz", **state)


def convert_to_legacy(checkpoint: Path) -> None:
    """Rewrite an Orbax checkpoint of a one-device run in place in the format before Orbax.

    Arrays come from plain Orbax restores of ``state/`` (on one CPU device), the weights file from
    a model built from ``model_config.json`` holding them."""
    import orbax.checkpoint as ocp

    from kerastrain.config import ModelConfig
    from kerastrain.data.pipeline import PipelineState
    from kerastrain.model.gpt import apply_lora, build_model
    from kerastrain.model.sharded_weights import restore_weights
    from kerastrain.storage.manifest import write_manifest

    checkpoint = Path(checkpoint)
    state = json.loads((checkpoint / "state.json").read_text())
    cfg = ModelConfig.load(checkpoint / "model_config.json")
    model = build_model(cfg)
    if cfg.use_lora:
        apply_lora(model, cfg.lora_rank)
    restore_weights(model, checkpoint, state)
    save_legacy_weights(model, checkpoint / "model.weights.h5")
    reader = ocp.PyTreeCheckpointer()
    rng = reader.restore((checkpoint / "state" / "rng").absolute()) \
        if (checkpoint / "state" / "rng").is_dir() else {}
    np.savez(checkpoint / "rng_state.npz", *[np.asarray(rng[k]) for k in sorted(rng)])
    opt = reader.restore((checkpoint / "state" / "optimizer").absolute())
    np.savez(checkpoint / "optimizer.npz",
             **{f"{i:05d}": np.asarray(opt[k]) for i, k in enumerate(sorted(opt))})
    positions = checkpoint / "pipeline_states" / "process_00000.json.gz"
    PipelineState(**json.loads(gzip.decompress(positions.read_bytes()))).save(
        checkpoint / "pipeline_state.json.gz")
    shutil.rmtree(checkpoint / "state")
    shutil.rmtree(checkpoint / "pipeline_states")
    old = {k: state[k] for k in ("step", "kind", "best_val_loss", "epoch", "tokens_seen",
                                 "saved_at")}
    old["weights"] = {"count": len(model.weights)}
    old["optimizer"] = {"count": state["optimizer"]["count"], "paths": state["optimizer"]["paths"]}
    (checkpoint / "state.json").write_text(json.dumps(old, indent=1))
    (checkpoint / "manifest.json").unlink()
    write_manifest(checkpoint, {"step": old["step"]})
