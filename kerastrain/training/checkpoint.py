"""Checkpoints: the folders, their sealing, listing, pruning and verified restore.

A checkpoint folder holds the training state as Orbax arrays (``state/``: model, RNG and
optimizer items, see :mod:`kerastrain.model.sharded_weights`) and beside it ``state.json`` (step,
data epoch, what each array is), ``pipeline_states/`` (each process's data position), the run and
model configuration and the tokenizer, so it resumes anywhere. Every run writes it the same way,
asynchronously (:mod:`kerastrain.training.sharded_checkpoint`), into a temporary folder that is
sealed with ``manifest.json`` (files, sizes, sha256; written last) and only then renamed into
place, so a crash while writing never leaves something that looks complete. Every restore is
verified against the manifest and against the variables the model has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kerastrain.errors import CheckpointError
from kerastrain.model.sharded_weights import restore_optimizer_variables, restore_weights
from kerastrain.storage.durable import fsync_dir, fsync_tree
from kerastrain.storage.manifest import is_complete, verify, write_manifest
from kerastrain.training.resolved import RESOLVED_FILE

STATE_FILE = "state.json"
PIPELINE_FILE = "pipeline_state.json.gz"  # the data position before per-process positions
RUN_CONFIG_FILE = "run_config.json"
MODEL_CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
STEP_DIR = re.compile(r"^checkpoint_step_(\d+)$")


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    state: dict


def write_metadata(tmp: Path, state: dict, *, run_config=None, resolved=None, tokenizer=None,
                   extra_files: dict[str, bytes] | None = None) -> None:
    """Everything of a checkpoint but the arrays: state, configs, tokenizer and ``extra_files``
    (relative path -> bytes: the data positions)."""
    state = {**state, "saved_at": time.time()}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
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


def restore_model(model, path: Path, rng: bool = True, grow: bool = False) -> dict:
    """Load weights (and, with ``rng``, dropout RNG states) into ``model`` from a complete
    checkpoint, verified against its manifest; returns the checkpoint's state. ``grow``: the
    vocabulary may have grown (``--init-from`` a checkpoint whose tokenizer gained chat markers)."""
    path = Path(path)
    verify(path)
    state = read_state(path)
    restore_weights(model, path, state, rng=rng, grow=grow)
    return state


def restore_optimizer(optimizer, path: Path, state: dict) -> None:
    """Load the optimizer's variables from a checkpoint (the optimizer must be built)."""
    restore_optimizer_variables(optimizer, path, state)


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
