"""How long a checkpoint stops training: the time a save blocks the loop against the time until
the checkpoint is sealed (complete on disk), with kerastrain's own checkpointer.

Every run saves the same way (one device is a mesh of one): :class:`kerastrain.training.
sharded_checkpoint.Checkpointer` copies the state to host memory, returns (``blocked``: the
training loop goes on from there) and Orbax writes the files meanwhile; ``sealed`` is the time
until the folder is complete (arrays written, manifest written last, renamed). In one subprocess,
on one device by default (no mesh, as ``kerastrain run`` on one device) or with ``--devices N``
forced CPU devices and ``--fsdp N``, the same training state of a preset is saved ``--rounds``
times:

    uv run python benchmarks/bench_checkpoint.py --preset tiny
    uv run python benchmarks/bench_checkpoint.py --preset small --devices 2

Figures are seconds, median of the rounds. The disk is the machine's local disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import numpy as np

    from kerastrain.config import DistributionConfig, ModelConfig, RunConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.model.presets import resolve_preset
    from kerastrain.training.distribution import make_mesh_plan
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.sharded_checkpoint import Checkpointer, CheckpointRecord
    from kerastrain.training.steps import initial_state

    fields = resolve_preset(args.preset)
    fields.update(vocab_size=args.vocab_size, dropout_rate=0.0)
    cfg = RunConfig(model=ModelConfig.from_dict(fields), distribution=DistributionConfig(
        fsdp=jax.device_count() if jax.device_count() > 1 else None))
    plan = make_mesh_plan(cfg)  # a mesh of one on one device, as in a one-device run
    with plan.scope(cfg.model):
        model = build_model(cfg.model)
        optimizer = make_optimizer(cfg, 1e-4, model)
        optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    for var in optimizer.variables:  # trained-like moments: zeros would compress to nothing
        if len(var.shape) and np.dtype(var.dtype).kind == "f":
            var.assign(rng.normal(0, 1e-3, var.shape).astype(var.dtype))
    state = initial_state(model, optimizer)
    jax.block_until_ready(state)
    out = Path(tempfile.mkdtemp(prefix="bench_ckpt_"))
    record = CheckpointRecord(run_config=cfg, resolved=None, tokenizer=None,
                              mesh=plan.shape.describe(), tokens_per_update=1)
    writer = Checkpointer(out, model, optimizer, record, primary=jax.process_index() == 0,
                          process_count=jax.process_count())
    blocked, sealed = [], []
    for i in range(args.rounds):
        start = time.perf_counter()
        writer.save(state, f"checkpoint_step_{i}", "step", step=i, best_val=None,
                    pipeline_state=None)
        blocked.append(time.perf_counter() - start)
        writer.finish() if i == args.rounds - 1 else writer.wait_until_sealed()
        sealed.append(time.perf_counter() - start)
    size = sum(f.stat().st_size for f in (out / "checkpoint_step_0").rglob("*") if f.is_file())
    return {"preset": args.preset, "devices": jax.device_count(),
            "parameters": model.count_params(), "checkpoint_mib": size / 2**20,
            "blocked_s": statistics.median(blocked), "sealed_s": statistics.median(sealed),
            "rounds": args.rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
    proc = subprocess.run([sys.executable, __file__, "--worker", *sys.argv[1:]], env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(proc.stderr[-3000:])
    r = json.loads(lines[-1][len("RESULT "):])
    where = "one device" if r["devices"] == 1 else f"fsdp over {r['devices']} devices"
    print(f"{r['preset']}: {r['parameters']:,} parameters, {where}, checkpoint "
          f"{r['checkpoint_mib']:.0f} MiB (weights + AdamW state), median of {r['rounds']} saves")
    print(f"  training blocked (copy to host)  {r['blocked_s']:.3f} s")
    print(f"  until sealed (on disk, manifest) {r['sealed_s']:.3f} s")
    print(f"  blocked / sealed                 {r['blocked_s'] / r['sealed_s']:.3f}")


if __name__ == "__main__":
    main()
