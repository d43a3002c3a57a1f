"""Training-loop speed: Keras ``model.fit`` vs kerastrain's jitted stateless loop.

Same model, same optimizer settings, same batch, measured side by side in one process:

    uv run python benchmarks/bench_loop.py --preset nano --batch-size 8 --steps 20

Prints tokens/s of each (after one warm-up/compile step) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastrain.config import ModelConfig, RunConfig, TrainConfig  # noqa: E402
from kerastrain.model.gpt import build_model  # noqa: E402
from kerastrain.model.presets import resolve_preset  # noqa: E402
from kerastrain.training.optimizer import make_optimizer  # noqa: E402
from kerastrain.training.steps import initial_state, lm_loss, make_steps  # noqa: E402


def config(args) -> RunConfig:
    fields = resolve_preset(args.preset)
    fields.update(vocab_size=args.vocab_size, seq_len=args.seq_len, dropout_rate=0.0)
    return RunConfig(model=ModelConfig.from_dict(fields), train=TrainConfig(batch_size=args.batch_size))


def bench_stateless(cfg, x, y, steps) -> float:
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model)
    opt = make_optimizer(cfg, 1e-4, model)
    train_step, _ = make_steps(model, opt)
    state = initial_state(model, opt)
    loss, state = train_step(state, x, y)
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        loss, state = train_step(state, x, y)
    loss.block_until_ready()
    return time.perf_counter() - start


def bench_fit(cfg, x, y, steps) -> float:
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model)
    opt = make_optimizer(cfg, 1e-4, model)
    model.compile(optimizer=opt, loss=lm_loss, jit_compile=True)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)  # compile
    xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
    start = time.perf_counter()
    model.fit(xs, ys, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two this many times")
    args = parser.parse_args()
    cfg = config(args)
    rng = np.random.default_rng(0)
    x = rng.integers(0, args.vocab_size, (args.batch_size, args.seq_len)).astype("int32")
    y = rng.integers(0, args.vocab_size, (args.batch_size, args.seq_len)).astype("int32")
    tokens = args.steps * args.batch_size * args.seq_len
    results = {"fit": [], "stateless": []}
    for _ in range(args.rounds):  # alternate, so machine noise hits both alike
        results["fit"].append(tokens / bench_fit(cfg, x, y, args.steps))
        results["stateless"].append(tokens / bench_stateless(cfg, x, y, args.steps))
    fit, stateless = max(results["fit"]), max(results["stateless"])
    print(f"preset {args.preset}, batch {args.batch_size}x{args.seq_len}, vocab "
          f"{args.vocab_size}, {args.steps} steps, best of {args.rounds}")
    print(f"model.fit          : {fit:10,.0f} tokens/s  (rounds: "
          f"{', '.join(f'{r:,.0f}' for r in results['fit'])})")
    print(f"stateless jit loop : {stateless:10,.0f} tokens/s  (rounds: "
          f"{', '.join(f'{r:,.0f}' for r in results['stateless'])})")
    print(f"ratio stateless/fit: {stateless / fit:.2f}")


if __name__ == "__main__":
    main()
