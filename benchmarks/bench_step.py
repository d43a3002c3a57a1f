"""Step overhead: kerastrain's training step vs a hand-written pure JAX + optax step.

Both implement the same GPT (LayerNorm, GELU MLP, learned positions, tied embeddings, no
projection biases, no dropout), the same AdamW (beta 0.9/0.95, epsilon 1e-8, weight decay on
matrices only, global-norm clipping 1.0) and run on the same batch, alternated in one process:

    python benchmarks/bench_step.py --shape nano --steps 3 --rounds 7
    python benchmarks/bench_step.py --shape 0.8m --steps 20 --rounds 7

``nano``: vocab 16000, d 192, 4 layers, batch 16 x 256; ``0.8m``: nanoGPT's Shakespeare-char
size (vocab 65, d 128, 4 layers, 4 heads, d_ff 512, batch 12 x 64). kerastrain's step is called
as the training loop calls it (with the update's per-row trained-token counts). Each round times
``--steps`` steps of one, then of the other; printed: tokens/s (median over rounds), the median
of the per-round ratios of wall time and of process CPU time (the CPU ratio is the steadier one
on a shared machine), target >= 1.0. The pure step is what nanoGPT would write in JAX:
full-vocabulary logits, ``optax.adamw``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from kerastrain.config import RunConfig, TrainConfig  # noqa: E402
from kerastrain.model.gpt import build_model  # noqa: E402
from kerastrain.model.presets import preset_config  # noqa: E402
from kerastrain.training.optimizer import make_optimizer  # noqa: E402
from kerastrain.training.steps import initial_state, make_steps  # noqa: E402

SHAPES = {
    "nano": {"vocab_size": 16000, "batch_size": 16},
    "0.8m": {"vocab_size": 65, "d_model": 128, "num_layers": 4, "num_heads": 4, "d_ff": 512,
             "seq_len": 64, "batch_size": 12},
}


def pure_params(cfg, key):
    d, ff, v, t = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.seq_len
    keys = iter(jax.random.split(key, 4 + 6 * cfg.num_layers))
    normal = lambda shape, std=0.02: std * jax.random.normal(next(keys), shape)  # noqa: E731
    out_std = 0.02 / (2 * cfg.num_layers) ** 0.5
    layers = [{
        "ln1_g": jnp.ones(d), "ln1_b": jnp.zeros(d), "ln2_g": jnp.ones(d), "ln2_b": jnp.zeros(d),
        "wq": normal((d, d)), "wk": normal((d, d)), "wv": normal((d, d)),
        "wo": normal((d, d), out_std), "up": normal((d, ff)), "down": normal((ff, d), out_std),
    } for _ in range(cfg.num_layers)]
    return {"wte": normal((v, d)), "wpe": normal((t, d)), "layers": layers,
            "lnf_g": jnp.ones(d), "lnf_b": jnp.zeros(d)}


def layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * g + b


def pure_loss(params, x, y, heads):
    b, t = x.shape
    h = params["wte"][x] + params["wpe"][:t]
    for p in params["layers"]:
        a = layer_norm(h, p["ln1_g"], p["ln1_b"])
        split = lambda z: z.reshape(b, t, heads, -1)  # noqa: E731
        att = jax.nn.dot_product_attention(split(a @ p["wq"]), split(a @ p["wk"]),
                                           split(a @ p["wv"]), is_causal=True)
        h = h + att.reshape(b, t, -1) @ p["wo"]
        m = layer_norm(h, p["ln2_g"], p["ln2_b"])
        h = h + jax.nn.gelu(m @ p["up"], approximate=False) @ p["down"]
    h = layer_norm(h, params["lnf_g"], params["lnf_b"])
    logits = (h @ params["wte"].T).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def pure_step_fn(cfg):
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.01,
                                 mask=decay_mask))

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(pure_loss)(params, x, y, cfg.num_heads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), opt_state

    return tx, jax.jit(step, donate_argnums=(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nano")
    parser.add_argument("--batch-size", type=int, default=None, help="Default: the shape's")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    shape = dict(SHAPES[args.shape])
    batch_size = args.batch_size or shape.pop("batch_size")
    shape.pop("batch_size", None)
    model_cfg = preset_config("nano", use_rmsnorm=False, use_swiglu=False, use_rope=False,
                              activation="gelu", dropout_rate=0.0, **shape)
    cfg = RunConfig(model=model_cfg, train=TrainConfig(batch_size=batch_size))
    rng = np.random.default_rng(0)
    vocab = model_cfg.vocab_size
    x = rng.integers(0, vocab, (batch_size, model_cfg.seq_len)).astype("int32")
    y = rng.integers(0, vocab, (batch_size, model_cfg.seq_len)).astype("int32")
    counts = (y >= 0).sum(axis=1, dtype=np.int32)  # what the loop passes (steps.update_counts)

    keras.utils.set_random_seed(0)
    model = build_model(model_cfg)
    opt = make_optimizer(cfg, 1e-4, model)
    k_step, _ = make_steps(model, opt)
    k_state = initial_state(model, opt)
    params = pure_params(model_cfg, jax.random.key(0))
    tx, p_step = pure_step_fn(model_cfg)
    p_state = (params, tx.init(params))
    n_keras = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    n_pure = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    print(f"parameters: kerastrain {n_keras:,}, pure JAX {n_pure:,}")

    def run_keras(steps):
        nonlocal k_state
        for _ in range(steps):
            loss, k_state = k_step(k_state, x, y, counts)
        return loss

    def run_pure(steps):
        nonlocal p_state
        for _ in range(steps):
            loss, *p_state = p_step(*p_state, x, y)
        return loss

    for run in (run_keras, run_pure):  # compile
        jax.block_until_ready(run(1))
    tokens = args.steps * batch_size * model_cfg.seq_len
    wall = {"kerastrain": [], "pure": []}
    cpu = {"kerastrain": [], "pure": []}
    for i in range(args.rounds):
        order = (("kerastrain", run_keras), ("pure", run_pure))
        for name, run in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(run(args.steps))
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    for name in wall:
        print(f"{name} step: {tokens / statistics.median(wall[name]):,.0f} tokens/s (median)")
    ratio = statistics.median(p / k for p, k in zip(wall["pure"], wall["kerastrain"], strict=True))
    cpu_ratio = statistics.median(p / k for p, k in zip(cpu["pure"], cpu["kerastrain"], strict=True))
    print(f"ratio kerastrain / pure (speed, median of {args.rounds} rounds): wall {ratio:.3f}, "
          f"CPU time {cpu_ratio:.3f} (target >= 1.0)")


if __name__ == "__main__":
    main()
