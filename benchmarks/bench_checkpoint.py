"""How long a checkpoint stops training on a device mesh: Orbax's sharded, asynchronous write
against the gather-to-process-0, synchronous write it replaced.

In one subprocess with N forced CPU devices (``--fsdp N``: weights and optimizer state sharded),
the same training state of a preset is saved three times each way, with kerastrain's own code:

* ``orbax``: :class:`kerastrain.training.sharded_checkpoint.ShardedCheckpointer` -- ``blocked`` is
  the time until ``save`` returns (the training loop goes on from there), ``sealed`` the time until
  the folder is complete (shards written, manifest written last, renamed);
* ``gather``: the state gathered to whole arrays, then
  :func:`kerastrain.training.checkpoint.save_checkpoint` (``model.weights.h5``): training waits
  for all of it.

    uv run python benchmarks/bench_checkpoint.py --preset small --devices 2

Figures are seconds, median of the rounds; the ratio ``blocked / gather`` is what a save costs
the training loop now relative to before. The disk is the machine's local disk.
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
from types import SimpleNamespace


def worker(args) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    from kerastrain.config import ModelConfig, RunConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.model.presets import resolve_preset
    from kerastrain.training.checkpoint import save_checkpoint
    from kerastrain.training.distribution import make_mesh_plan
    from kerastrain.training.loop import initial_state
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.processes import SilentHooks
    from kerastrain.training.sharded_checkpoint import ShardedCheckpointer

    fields = resolve_preset(args.preset)
    fields.update(vocab_size=args.vocab_size, dropout_rate=0.0)
    cfg = RunConfig(model=ModelConfig(**{k: v for k, v in fields.items()
                                         if k in ModelConfig.__dataclass_fields__}))
    cfg.distribution.fsdp = jax.device_count()
    plan = make_mesh_plan(cfg)
    with plan.scope():
        model = build_model(cfg.model)
        optimizer = make_optimizer(cfg, 1e-4, model)
        optimizer.build(model.trainable_variables)
    import numpy as np

    rng = np.random.default_rng(0)
    for var in optimizer.variables:  # trained-like moments: zeros would compress to nothing
        if len(var.shape) and np.dtype(var.dtype).kind == "f":
            var.assign(rng.normal(0, 1e-3, var.shape).astype(var.dtype))
    state = initial_state(model, optimizer)
    out = Path(tempfile.mkdtemp(prefix="bench_ckpt_"))
    trainer = SimpleNamespace(  # what the checkpointer reads of a Trainer
        mesh_plan=plan, model=model, optimizer=optimizer, cfg=cfg, step=0, best_val=None,
        tokens_per_update=1, hooks=SilentHooks(),
        run=SimpleNamespace(output_dir=out, tokenizer=None))
    writer = ShardedCheckpointer(trainer)
    blocked, sealed, gather = [], [], []
    for i in range(args.rounds):
        trainer.step = i
        start = time.perf_counter()
        writer.save(state, f"orbax_{i}", "step", None)
        blocked.append(time.perf_counter() - start)
        writer.finish() if i == args.rounds - 1 else writer.wait_until_sealed()
        sealed.append(time.perf_counter() - start)
        start = time.perf_counter()
        whole = jax.jit(lambda s: s, out_shardings=jax.tree.map(lambda _: plan.replicated, state))(
            state)  # the all-gather the replaced code did
        variables = model.trainable_variables + model.non_trainable_variables + optimizer.variables
        for var, value in zip(variables, [v for part in whole for v in part], strict=True):
            var._value = value  # whole arrays, as the replaced code wrote them
        save_checkpoint(out / f"gather_{i}", model=model, optimizer=optimizer,
                        state={"step": i}, run_config=cfg)
        gather.append(time.perf_counter() - start)
    size = sum(f.stat().st_size for f in (out / "orbax_0").rglob("*") if f.is_file())
    return {"preset": args.preset, "devices": jax.device_count(),
            "parameters": model.count_params(), "checkpoint_mib": size / 2**20,
            "orbax_blocked_s": statistics.median(blocked),
            "orbax_sealed_s": statistics.median(sealed),
            "gather_sync_s": statistics.median(gather)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--devices", type=int, default=2)
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
    print(f"{r['preset']}: {r['parameters']:,} parameters, fsdp over {r['devices']} devices, "
          f"checkpoint {r['checkpoint_mib']:.0f} MiB (weights + AdamW state)")
    print(f"  orbax, training blocked   {r['orbax_blocked_s']:.3f} s")
    print(f"  orbax, until sealed       {r['orbax_sealed_s']:.3f} s")
    print(f"  gather + h5, synchronous  {r['gather_sync_s']:.3f} s")
    print(f"  blocked / gather ratio    {r['orbax_blocked_s'] / r['gather_sync_s']:.3f}")


if __name__ == "__main__":
    main()
