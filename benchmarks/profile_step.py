"""Profile kerastrain's training step with ``jax.profiler`` and print the costliest ops.

    python benchmarks/profile_step.py --preset nano --batch-size 16 --steps 3

Builds the preset's GPT (its default switches: RMSNorm, SwiGLU, RoPE), compiles the jitted step
that ``kerastrain run`` uses, then traces ``--steps`` steps with ``jax.profiler.trace`` (the
Perfetto trace, which needs no TensorBoard plugin to read) and adds up the device time of each
XLA op by name. Prints the top ``--top`` ops with their share of the traced op time; the trace
folder stays for a closer look (``--keep``) in Perfetto or TensorBoard.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastrain.config import RunConfig, TrainConfig  # noqa: E402
from kerastrain.model.gpt import build_model  # noqa: E402
from kerastrain.model.presets import preset_config  # noqa: E402
from kerastrain.training.optimizer import make_optimizer  # noqa: E402
from kerastrain.training.steps import initial_state, make_steps  # noqa: E402


def op_times(trace_dir: Path, module: str) -> dict[str, float]:
    """Microseconds per XLA op of ``module``, from the Perfetto trace the profiler wrote."""
    files = list(trace_dir.rglob("*.trace.json.gz")) or list(trace_dir.rglob("perfetto*.json.gz"))
    if not files:
        raise SystemExit(f"no trace file under {trace_dir}")
    with gzip.open(files[0], "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        args = event.get("args") or {}
        if event.get("ph") == "X" and args.get("hlo_module") == module and "hlo_op" in args:
            totals[args["hlo_op"]] += float(event.get("dur", 0.0))
    return totals


def describe(hlo: str, op: str) -> str:
    """What an op of the compiled HLO is: its result shape and the JAX operation it came from."""
    line = next((ln for ln in hlo.splitlines() if re.match(rf"\s*(ROOT )?%?{re.escape(op)} = ", ln)),
                "")
    shape = re.search(r"= (\S+?\[[^\]]*\])", line)
    source = re.search(r'op_name="([^"]+)"', line)
    kind = re.search(r"= \S+ (\w+)\(", line)
    what = source.group(1).split("/")[-1] if source else (kind.group(1) if kind else "?")
    return f"{shape.group(1) if shape else ''} {what}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="Keep the trace folder")
    parser.add_argument("--logits-per-chunk", type=int, default=None,
                        help="Override the chunked loss's logits per chunk (see training/loss.py)")
    args = parser.parse_args()
    if args.logits_per_chunk:
        from kerastrain.training import loss

        loss.LOGITS_PER_CHUNK = args.logits_per_chunk

    model_cfg = preset_config(args.preset, vocab_size=args.vocab_size, seq_len=args.seq_len,
                              dropout_rate=0.0)
    cfg = RunConfig(model=model_cfg, train=TrainConfig(batch_size=args.batch_size))
    rng = np.random.default_rng(0)
    shape = (args.batch_size, model_cfg.seq_len)
    x = rng.integers(0, args.vocab_size, shape).astype("int32")
    y = rng.integers(0, args.vocab_size, shape).astype("int32")
    keras.utils.set_random_seed(0)
    model = build_model(model_cfg)
    optimizer = make_optimizer(cfg, 1e-4, model)
    step, _ = make_steps(model, optimizer)
    state = initial_state(model, optimizer)
    hlo = step.lower(state, x, y).compile().as_text()
    loss, state = step(state, x, y)  # compile
    jax.block_until_ready(loss)
    import time

    start = time.perf_counter()
    for _ in range(args.steps):
        loss, state = step(state, x, y)
    jax.block_until_ready(loss)
    wall = (time.perf_counter() - start) / args.steps
    trace_dir = Path(tempfile.mkdtemp(prefix="kerastrain_profile_"))
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        for _ in range(args.steps):
            loss, state = step(state, x, y)
        jax.block_until_ready(loss)
    totals = op_times(trace_dir, "jit_train_step")
    whole = sum(totals.values())
    print(f"{args.preset}, batch {args.batch_size} x {model_cfg.seq_len}, vocab "
          f"{args.vocab_size}: {wall * 1e3:.0f} ms per step (untraced); {args.steps} traced "
          f"steps, {whole / 1e3 / args.steps:.1f} ms of op time per step (all threads)")
    print(f"{'op':<26} {'ms/step':>8} {'share':>6}  what (result shape, JAX operation)")
    for name, micros in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name[:26]:<26} {micros / 1e3 / args.steps:>8.1f} {micros / whole:>6.1%}  "
              f"{describe(hlo, name)[:90]}")
    if args.keep:
        print(f"trace: {trace_dir}")


if __name__ == "__main__":
    main()
