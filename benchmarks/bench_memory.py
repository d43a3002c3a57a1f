"""Training-step memory and speed: full-vocabulary logits vs the chunked fused loss vs ``--remat``.

Each variant runs in its own process (so peak RSS is its own): the same model, optimizer and
batch; XLA's buffer-assignment peak, the process's peak RSS and seconds per step are printed.

    python benchmarks/bench_memory.py --preset nano --batch-size 32 --steps 3

``full`` is the loss before the chunked loss existed: ``model.stateless_call`` to float32 logits of
the whole batch, then Keras' sparse categorical cross-entropy. ``eval`` is the scoring step of
``kerastrain eval`` and the in-run validation at the same batch (``eval-full``: the full-logits
scoring it replaced): its peak should stay near ``chunked`` training's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("full", "chunked", "chunked+remat", "eval", "eval-full")
# eval: what `kerastrain eval` and the in-run validation compile (the chunked loss, no gradient);
# eval-full: eval as it was before (the whole batch's float32 logits).


def child(args) -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import keras
    import numpy as np

    from kerastrain.config import RunConfig, TrainConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.model.presets import preset_config
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import initial_state, lm_loss, make_steps

    cfg = RunConfig(model=preset_config(args.preset, vocab_size=args.vocab_size,
                                        remat=args.variant.endswith("remat")),
                    train=TrainConfig(batch_size=args.batch_size))
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model)
    opt = make_optimizer(cfg, 1e-4, model)
    if args.variant == "full":
        def loss_fn(trainable, non_trainable, x, y):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return lm_loss(y, logits), non_trainable

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def train_step(state, x, y):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, opt_vars = opt.stateless_apply(opt_vars, grads, trainable)
            return loss, (trainable, non_trainable, opt_vars)

        train_step = jax.jit(train_step, donate_argnums=0)
    else:
        train_step, _ = make_steps(model, opt)
    state = initial_state(model, opt)
    rng = np.random.default_rng(0)
    x = rng.integers(0, args.vocab_size, (args.batch_size, cfg.model.seq_len)).astype("int32")
    if args.variant.startswith("eval"):
        eval_step(args, model, state, x)
        return
    compiled = train_step.lower(state, x, x).compile()
    stats = compiled.memory_analysis()
    xla_peak = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    loss, state = train_step(state, x, x)
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, state = train_step(state, x, x)
    loss.block_until_ready()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"variant": args.variant, "xla_peak_mib": xla_peak / 2**20,
                      "temporaries_mib": stats.temp_size_in_bytes / 2**20,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "step_s": seconds, "loss": float(loss if loss.ndim == 0 else loss[0])}))


def eval_step(args, model, state, x) -> None:
    import functools

    import jax
    import keras

    from kerastrain.training.loss import chunked_eval_loss

    if args.variant == "eval":
        score = jax.jit(functools.partial(chunked_eval_loss, model))
    else:
        def score(trainable, non_trainable, x, y):
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            losses = keras.losses.sparse_categorical_crossentropy(
                y, keras.ops.cast(logits, "float32"), from_logits=True)
            return keras.ops.sum(losses), losses.size

        score = jax.jit(score)
    trainable, non_trainable, _ = state
    stats = score.lower(trainable, non_trainable, x, x).compile().memory_analysis()
    xla_peak = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    total, n = score(trainable, non_trainable, x, x)
    start = time.perf_counter()
    for _ in range(args.steps):
        total, n = score(trainable, non_trainable, x, x)
    jax.block_until_ready(total)
    print(json.dumps({"variant": args.variant, "xla_peak_mib": xla_peak / 2**20,
                      "temporaries_mib": stats.temp_size_in_bytes / 2**20,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "step_s": (time.perf_counter() - start) / args.steps,
                      "loss": float(total) / int(n)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    rows = []
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--preset",
                              args.preset, "--batch-size", str(args.batch_size), "--vocab-size",
                              str(args.vocab_size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{variant:>14}: XLA peak {r['xla_peak_mib']:7.0f} MiB (temporaries "
              f"{r['temporaries_mib']:6.0f}), peak RSS {r['peak_rss_mib']:6.0f} MiB, "
              f"{r['step_s']:.2f} s/step, loss {r['loss']:.4f}", flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['variant']} vs full: XLA peak x{r['xla_peak_mib'] / base['xla_peak_mib']:.2f}, "
              f"RSS x{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}, "
              f"speed x{base['step_s'] / r['step_s']:.2f}")


if __name__ == "__main__":
    main()
