"""Checkpoints: weights, optimizer state, step, data position, RNG state and run configuration.

A checkpoint is written into a temporary directory, sealed with ``manifest.json`` (files, sizes,
sha256; written last) and only then renamed into place, so a crash while writing never leaves
something that looks complete. Every restore is verified: Keras restores nothing, silently, when
variable paths differ, so every load is checked against the file (``kerastrain.model.weights``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerastrain.errors import CheckpointError
from kerastrain.model.sharded_weights import (
    is_sharded,
    restore_model_variables,
    restore_optimizer_variables,
)
from kerastrain.model.weights import load_weights_verified, save_weights
from kerastrain.storage.durable import fsync_dir, fsync_tree
from kerastrain.storage.manifest import is_complete, verify, write_manifest
from kerastrain.training.resolved import RESOLVED_FILE

WEIGHTS_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
PIPELINE_FILE = "pipeline_state.json.gz"
RUN_CONFIG_FILE = "run_config.json"
MODEL_CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
RNG_FILE = "rng_state.npz"  # dropout seed-generator states: Keras' weight files leave them out
STEP_DIR = re.compile(r"^checkpoint_step_(\d+)$")


def rng_variables(model) -> list:
    """Model variables that are not weights (seed-generator states of dropout layers)."""
    weight_ids = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    state: dict


def save_checkpoint(
    path: Path,
    *,
    model,
    optimizer,
    state: dict,
    pipeline_state=None,
    run_config=None,
    resolved=None,
    tokenizer=None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete checkpoint at ``path`` atomically (replacing an older one there).

    ``extra_files``: relative path -> bytes, written inside it too (e.g. per-process data
    positions)."""
    path = Path(path)
    tmp = fresh_temporary(path, os.getpid())
    save_weights(model, tmp / WEIGHTS_FILE)
    # By position: seed generators get process-wide auto-numbered names.
    np.savez(tmp / RNG_FILE, *[np.asarray(v.value) for v in rng_variables(model)])
    opt_vars = optimizer.variables if optimizer is not None else []
    np.savez(tmp / OPTIMIZER_FILE, **{f"{i:05d}": np.asarray(v.value) for i, v in enumerate(opt_vars)})
    full_state = dict(state)
    full_state["weights"] = {"count": len(model.weights)}
    full_state["optimizer"] = {"count": len(opt_vars), "paths": [v.path for v in opt_vars]}
    write_metadata(tmp, full_state, pipeline_state=pipeline_state, run_config=run_config,
                   resolved=resolved, tokenizer=tokenizer, extra_files=extra_files)
    return seal(tmp, path, state.get("step"))


def fresh_temporary(path: Path, tag) -> Path:
    """An empty temporary folder beside ``path`` to write its checkpoint into."""
    tmp = Path(path).parent / f".tmp-{Path(path).name}-{tag}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_metadata(tmp: Path, state: dict, *, pipeline_state=None, run_config=None,
                   resolved=None, tokenizer=None,
                   extra_files: dict[str, bytes] | None = None) -> None:
    """Everything of a checkpoint but the arrays: state, data position, configs, tokenizer."""
    state = {**state, "saved_at": time.time()}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    if pipeline_state is not None:
        pipeline_state.save(tmp / PIPELINE_FILE)
    if run_config is not None:  # what was asked, and what the run resolved from it
        run_config.save(tmp / RUN_CONFIG_FILE)
    if resolved is not None:
        resolved.save(tmp / RESOLVED_FILE)
        resolved.model.save(tmp / MODEL_CONFIG_FILE)
    if tokenizer is not None:  # a checkpoint is self-contained: resumable anywhere
        tokenizer.save(tmp / TOKENIZER_FILE)
    for rel, data in (extra_files or {}).items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)


def seal(tmp: Path, path: Path, step) -> Path:
    """fsync ``tmp``, write its manifest last, then rename it to ``path`` (replacing it)."""
    fsync_tree(tmp)  # the data first: the manifest must never vouch for unwritten files
    write_manifest(tmp, {"step": step})
    fsync_dir(tmp)
    old = None
    if path.exists():
        old = path.parent / f".old-{path.name}-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)  # the rename itself
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def remove_leftovers(output_dir: Path) -> list[Path]:
    """Delete the temporary folders of checkpoints a killed run was writing (never complete)."""
    removed = []
    for tmp in Path(output_dir).glob(".tmp-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def read_state(path: Path) -> dict:
    try:
        return json.loads((Path(path) / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a kerastrain checkpoint ({exc})") from exc


def restore_model(model, path: Path, rng: bool = True) -> dict:
    """Load weights (and, with ``rng``, dropout RNG states) into ``model`` and verify them;
    returns the checkpoint's state."""
    path = Path(path)
    verify(path)
    state = read_state(path)
    if is_sharded(path):
        restore_model_variables(model, path, state, rng=rng)
        return state
    load_weights_verified(model, path / WEIGHTS_FILE)
    if rng and (path / RNG_FILE).exists():
        with np.load(path / RNG_FILE) as data:
            rng_vars = rng_variables(model)
            if len(data.files) != len(rng_vars):
                raise CheckpointError(f"{path} holds another number of dropout RNG states")
            for i, var in enumerate(rng_vars):
                var.assign(data[f"arr_{i}"])
    return state


def restore_optimizer(optimizer, path: Path, state: dict) -> None:
    """Load optimizer variables saved by :func:`save_checkpoint` (the optimizer must be built)."""
    if is_sharded(path):
        restore_optimizer_variables(optimizer, path, state)
        return
    expected = state["optimizer"]
    if expected["count"] != len(optimizer.variables):
        raise CheckpointError(
            f"{path} holds {expected['count']} optimizer variables, the optimizer has "
            f"{len(optimizer.variables)}: the training configuration differs (e.g. "
            "--gradient-accumulation-steps or --use-lora); resume with the same options"
        )
    with np.load(Path(path) / OPTIMIZER_FILE) as data:
        for i, var in enumerate(optimizer.variables):
            value = data[f"{i:05d}"]
            if tuple(value.shape) != tuple(var.shape):
                raise CheckpointError(f"optimizer variable {var.path} has another shape in {path}")
            var.assign(value)


def list_checkpoints(output_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints in ``output_dir`` (those with a valid manifest), oldest first."""
    found = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return found
    for child in output_dir.iterdir():
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not (STEP_DIR.match(child.name) or child.name in ("final_checkpoint", "best_checkpoint")):
            continue
        if not is_complete(child):
            continue
        try:
            state = read_state(child)
        except CheckpointError:
            continue
        found.append(CheckpointInfo(child, int(state.get("step", 0)), state))
    # Among equal steps prefer final over a step checkpoint over best (best may lag behind).
    rank = {"best_checkpoint": 0, "final_checkpoint": 2}
    found.sort(key=lambda c: (c.step, rank.get(c.path.name, 1), c.state.get("saved_at", 0)))
    return found


def newest_verified_checkpoint(output_dir: Path, say=None) -> CheckpointInfo | None:
    """The checkpoint to resume from: the newest complete one, best_checkpoint excluded, every
    file's sha256 checked; one that fails is skipped (saying so through ``say``) for the previous
    complete one."""
    candidates = [c for c in list_checkpoints(output_dir) if c.path.name != "best_checkpoint"]
    for info in reversed(candidates):
        try:
            verify(info.path)
        except CheckpointError as exc:
            if say is not None:
                say(f"Skipping {info.path.name}: {exc}; falling back to the previous complete "
                    "checkpoint")
            continue
        return info
    return None


def prune_step_checkpoints(output_dir: Path, keep_last: int | None,
                           keep: set | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``checkpoint_step_N`` directories (never those in
    ``keep``, e.g. still uploading)."""
    keep = {Path(p).resolve() for p in keep or ()}
    if not keep_last:
        return []
    steps = sorted(
        (int(m.group(1)), p)
        for p in Path(output_dir).iterdir()
        if (m := STEP_DIR.match(p.name)) and p.is_dir()
    )
    removed = []
    for _, p in steps[:-keep_last]:
        if p.resolve() in keep:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
