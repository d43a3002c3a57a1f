"""Scaling out on forced host devices: step time, tokens/s per device and per-device memory.

For 1, 2 and 4 forced CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, each
count in its own subprocess since JAX reads the flag at start-up) and each mesh (all data
parallel; all FSDP), the same per-device batch trains the same model with kerastrain's own
sharded step (``kerastrain.training.steps.make_steps`` with a ``MeshPlan``):

    uv run python benchmarks/bench_scaling.py --preset nano --batch-size 4 --steps 10

Forced host devices share the machine's CPU cores: on a 2-core box 4 "devices" cannot be faster
than 1, so these figures show the partitioning's overhead, not a speed-up. Memory is XLA's
analysis of the compiled step per device (arguments = weights + optimizer state + batch shard).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(args) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import numpy as np

    from kerastrain.config import DistributionConfig, ModelConfig, RunConfig, TrainConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.model.presets import resolve_preset
    from kerastrain.training.distribution import make_mesh_plan
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import initial_state, make_steps

    fields = resolve_preset(args.preset)
    fields.update(vocab_size=args.vocab_size, seq_len=args.seq_len, dropout_rate=0.0)
    cfg = RunConfig(model=ModelConfig.from_dict(fields), train=TrainConfig(batch_size=args.batch_size),
                    distribution=DistributionConfig(
                        fsdp=jax.device_count() if args.mode == "fsdp" else None))
    plan = make_mesh_plan(cfg)  # one device: a mesh of one, as in a run
    with plan.scope(cfg.model):
        model = build_model(cfg.model)
        optimizer = make_optimizer(cfg, 1e-4, model)
    step, _ = make_steps(model, optimizer, plan)
    rows = args.batch_size * jax.device_count()
    rng = np.random.default_rng(0)
    x = rng.integers(0, args.vocab_size, (rows, args.seq_len), dtype=np.int32)
    counts = np.full((rows,), args.seq_len, dtype=np.int32)  # trained labels per row
    x, counts = plan.place_batch(x), plan.place_rows(counts)
    state = initial_state(model, optimizer)
    compiled = step.lower(state, x, x, counts).compile()
    memory = compiled.memory_analysis()
    loss, state = compiled(state, x, x, counts)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, state = compiled(state, x, x, counts)
    jax.block_until_ready(loss)
    seconds = (time.perf_counter() - start) / args.steps
    tokens = rows * args.seq_len
    return {"devices": jax.device_count(), "mode": args.mode, "step_ms": 1000 * seconds,
            "tokens_per_s": tokens / seconds, "tokens_per_s_per_device": tokens / seconds
            / jax.device_count(), "arguments_mib": memory.argument_size_in_bytes / 2**20,
            "temporaries_mib": memory.temp_size_in_bytes / 2**20, "params": model.count_params()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--batch-size", type=int, default=4, help="per device")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT" + json.dumps(worker(args)))
        return
    print(f"preset {args.preset}, seq_len {args.seq_len}, batch {args.batch_size} per device, "
          f"{args.steps} timed steps; {os.cpu_count()} CPU cores (forced host devices share them)")
    print(f"{'devices':>7} {'mesh':>5} {'step ms':>9} {'tok/s':>9} {'tok/s/dev':>10} "
          f"{'args MiB/dev':>13} {'temp MiB/dev':>13}")
    base = {}
    for n in [int(d) for d in args.devices.split(",")]:
        for mode in ("data", "fsdp") if n > 1 else ("data",):
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
            cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--preset", args.preset,
                   "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                   "--vocab-size", str(args.vocab_size), "--steps", str(args.steps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.split("RESULT", 1)[1])
            base.setdefault("args", r["arguments_mib"])
            print(f"{n:>7} {mode:>5} {r['step_ms']:>9.1f} {r['tokens_per_s']:>9,.0f} "
                  f"{r['tokens_per_s_per_device']:>10,.0f} {r['arguments_mib']:>13.2f} "
                  f"{r['temporaries_mib']:>13.2f}", flush=True)
    print(f"(per-device arguments relative to 1 device: FSDP over N devices should be ~1/N; "
          f"1-device arguments {base['args']:.2f} MiB)")


if __name__ == "__main__":
    main()
