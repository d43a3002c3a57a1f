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
