"""Time to a held-out loss: the AdamW + cosine baseline against the recipe this project makes
possible (Muon, WSD, z-loss), side by side in one process, on the embedded corpus.

    python benchmarks/bench_time_to_loss.py --shape small --steps 200

Every variant trains the same model from the same seed on the same batches for ``--steps``
updates, validating every ``--eval-every``. Printed: each variant's held-out loss at equal tokens
(its last validation), and the tokens (and seconds, at the variant's measured throughput) the
variant needed to reach the baseline's final held-out loss (linear interpolation between
validations). ``--sweep`` first sweeps AdamW's --learning-rate and Muon's --muon-lr.
``recipe@0.65`` runs the full recipe with 0.65x the budget (its own decay at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

SHAPES = {  # nano is the preset; small-ish shapes fit a shared 2-core machine
    "nano": ["--preset", "nano", "--batch-size", "16"],
    "small": ["--tokenizer", "bytes", "--d-model", "64", "--num-layers", "2", "--num-heads", "2",
              "--d-ff", "256", "--seq-len", "64", "--batch-size", "16"],
    "tiny": ["--tokenizer", "bytes", "--d-model", "32", "--num-layers", "2", "--num-heads", "2",
             "--d-ff", "128", "--seq-len", "64", "--batch-size", "16"],
}


def train(shape: list[str], steps: int, eval_every: int, extra: list[str]) -> dict:
    from rich.console import Console

    from kerastrain.cli.options import parse_run_args
    from kerastrain.training.runner import run_training

    with tempfile.TemporaryDirectory(prefix="ttl-") as out:
        config = parse_run_args([*shape, "--max-steps", str(steps), "--eval-every",
                                 str(eval_every), "--log-every", str(eval_every),
                                 "--save-every", str(10 * steps), "--max-val-examples", "100",
                                 "--dropout-rate", "0", "--warmup-steps", str(steps // 10),
                                 "--output-dir", out, "--overwrite", *extra])
        start = time.perf_counter()
        summary = run_training(config, Console(quiet=True))
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    tokens_per_update = summary["tokens_per_sec"] and rows[0]["tokens_seen"] // rows[0]["step"]
    curve = [(r["step"] * tokens_per_update, r["val_loss"]) for r in rows if r["kind"] == "eval"]
    return {"curve": curve, "final": curve[-1][1], "tokens_per_sec": summary["tokens_per_sec"],
            "wall_s": wall}


def tokens_to_reach(curve, target: float) -> float | None:
    previous = (0, float("inf"))
    for tokens, loss in curve:
        if loss <= target:
            t0, l0 = previous
            if l0 == float("inf"):
                return float(tokens)
            return t0 + (tokens - t0) * (l0 - target) / (l0 - loss)
        previous = (tokens, loss)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="AdamW's (baseline)")
    parser.add_argument("--recipe-learning-rate", type=float, default=None,
                        help="AdamW's share of the Muon runs (default: --learning-rate)")
    parser.add_argument("--muon-lr", type=float, default=None, help="default: the option's")
    parser.add_argument("--z-loss", type=float, default=1e-4)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    shape, steps = SHAPES[args.shape], args.steps
    results: dict[str, dict] = {}

    def run(name, extra, budget=steps):
        r = train(shape, budget, args.eval_every, extra)
        results[name] = r
        print(f"{name:>22}: held-out {r['final']:.4f} after {r['curve'][-1][0]:,} tokens, "
              f"{r['tokens_per_sec']:,.0f} tokens/s, {r['wall_s']:.0f} s", flush=True)
        return r

    lr = args.learning_rate
    if args.sweep:
        for value in (lr / 3, lr * 3):
            run(f"sweep adamw lr {value:g}", ["--learning-rate", str(value)])
        for value in (1e-3, 3e-3, 1e-2, 3e-2):
            run(f"sweep muon-lr {value:g}", ["--learning-rate", str(lr), "--optimizer", "muon",
                                             "--muon-lr", str(value)])
    muon = ["--optimizer", "muon"] + (["--muon-lr", str(args.muon_lr)] if args.muon_lr else [])
    base = ["--learning-rate", str(lr)]
    baseline = run("baseline adamw+cosine", base)
    muon_base = ["--learning-rate", str(args.recipe_learning_rate or lr)]
    run("muon", muon_base + muon)
    run("wsd", base + ["--lr-schedule", "wsd"])
    run("z-loss", base + ["--z-loss", str(args.z_loss)])
    recipe = muon_base + muon + ["--lr-schedule", "wsd", "--z-loss", str(args.z_loss)]
    run("recipe", recipe)
    short = max(args.eval_every, int(round(0.65 * steps / args.eval_every)) * args.eval_every)
    run("recipe@0.65", recipe, budget=short)
    target, total = baseline["final"], baseline["curve"][-1][0]
    print(f"\nTo the baseline's final held-out loss {target:.4f} ({total:,} tokens):")
    for name, r in results.items():
        if name.startswith("sweep"):
            continue
        reach = tokens_to_reach(r["curve"], target)
        if reach is None:
            print(f"{name:>22}: not reached (final {r['final']:.4f})")
        else:
            print(f"{name:>22}: {reach:,.0f} tokens ({reach / total:.2f}x), "
                  f"{reach / r['tokens_per_sec']:.1f} s of training")
    print(json.dumps({k: {"final": v["final"], "curve": v["curve"]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
