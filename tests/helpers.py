"""Helpers for tests that run kerastrain as a user would: through its command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kerastrain.testing import invoke, run_command  # noqa: F401 (tests import invoke here)

# A model small enough that a real training step takes milliseconds on 2 cores.
TINY = [
    "--tokenizer", "bytes", "--d-model", "32", "--num-layers", "2", "--num-heads", "2",
    "--d-ff", "64", "--seq-len", "32", "--batch-size", "4", "--warmup-steps", "2",
    "--learning-rate", "3e-3", "--max-train-examples", "200", "--max-val-examples", "10",
]


# The CLI in this process (``invoke``) and in a subprocess: kerastrain.testing's, which plugins'
# tests use too.
kerastrain = run_command


TOY_PLUGIN = str(Path(__file__).parent / "toy_plugin")


def kill_9_at_step(output_dir: Path, args: list[str], step: int, delay: str = "0.3") -> int:
    """Start ``kerastrain run --output-dir OUTPUT_DIR ARGS`` (the toy plugin slows each step by
    ``delay`` seconds), kill it with SIGKILL once ``step`` is logged; returns the last step it
    logged."""
    import json
    import signal
    import time

    def logged() -> list[int]:
        path = output_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(x)["step"] for x in lines if '"kind": "train"' in x]

    env = dict(os.environ, PYTHONPATH=TOY_PLUGIN, KERASTRAIN_TOY_STEP_DELAY=delay)
    proc = subprocess.Popen([sys.executable, "-m", "kerastrain", "run", "--output-dir",
                             str(output_dir), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not any(s >= step for s in logged()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return max(logged())


def write_checkpoint(model, folder: Path) -> Path:
    """``folder`` as a checkpoint of ``model``'s weights, laid out as runs write them (Orbax
    ``state/model`` and ``state/rng``, ``state.json``, sealed by ``manifest.json``)."""
    import json

    import orbax.checkpoint as ocp

    from kerastrain.model.sharded_weights import (
        MODEL_ITEM,
        RNG_ITEM,
        STATE_DIR,
        describe,
        model_variables,
    )
    from kerastrain.storage.manifest import write_manifest
    from kerastrain.training.sharded_checkpoint import _lora_scale, model_trees

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, rngs = model_trees(model, [v.value for v in model.trainable_variables],
                                [v.value for v in model.non_trainable_variables])
    items = {MODEL_ITEM: ocp.args.StandardSave(weights)}
    if rngs:
        items[RNG_ITEM] = ocp.args.StandardSave(rngs)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as writer:
        writer.save((folder / STATE_DIR).absolute(), args=ocp.args.Composite(**items))
    record = {"step": 0, "kind": "final", "format": "orbax", "weights": {"count": len(model.weights)},
              "lora_scale": _lora_scale(model),
              "model_variables": describe(model_variables(model), {id(w) for w in model.weights})}
    (folder / "state.json").write_text(json.dumps(record, indent=1))
    write_manifest(folder, {"step": 0})
    return folder
