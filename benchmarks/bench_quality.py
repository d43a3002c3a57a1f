"""Training quality on long documents: kerastrain's pipeline vs a random-offset sampler.

The corpus is text every Python has: the standard library's docstrings, one document per module
(long documents, like books). Every tenth module is held out. The same model, optimizer, schedule,
initialization and token budget are trained twice:

1. by ``kerastrain run`` (its pipeline: document shuffle, packing, window shuffle), and
2. by a minimal nanoGPT-style sampler written here: each batch takes windows at uniformly random
   offsets of the concatenated training text, fed to kerastrain's own jitted step.

Both are scored on the *whole* held-out text cut into the same consecutive windows.

    python benchmarks/bench_quality.py --steps 400

Target: kerastrain's held-out loss <= the sampler's + 0.5%.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

SKIP = ("test", "tests", "idlelib", "tkinter", "lib2to3", "site-packages", "turtledemo", "ensurepip")


def stdlib_documents(min_chars: int = 2000) -> list[str]:
    """One document per standard-library module: its docstrings, in source order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        if any(part in SKIP for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        text = "\n\n".join(d for n in nodes if (d := ast.get_docstring(n)))
        if len(text) >= min_chars:
            docs.append(text)
    return docs


def run_args(args, data: Path, out: Path) -> list[str]:
    return ["--dataset-id", str(data), "--tokenizer", "bytes", "--d-model", str(args.d_model),
            "--num-layers", str(args.num_layers), "--num-heads", str(args.num_heads),
            "--d-ff", str(args.d_ff), "--seq-len", str(args.seq_len), "--batch-size",
            str(args.batch_size), "--max-steps", str(args.steps), "--learning-rate",
            str(args.learning_rate), "--warmup-steps", str(args.steps // 10), "--dropout-rate",
            "0", "--seed", str(args.seed), "--output-dir", str(out), "--log-every", "50",
            "--save-every", "1000000", "--eval-every", "1000000", *args.extra]


def config_for(argv: list[str]):
    from kerastrain.cli.options import parse_run_args

    return parse_run_args(argv)


def held_out_loss(model, eval_step, tokens: np.ndarray, seq_len: int, batch: int) -> float:
    window = seq_len + 1
    rows = len(tokens) // window
    windows = tokens[: rows * window].reshape(rows, window)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    total, count = 0.0, 0
    for i in range(0, rows, batch):
        chunk = windows[i:i + batch]
        s, n = eval_step(trainable, frozen, chunk[:, :-1], chunk[:, 1:])
        total, count = total + float(s), count + int(n)
    return total / count


def train_sampler(config, train_tokens: np.ndarray, steps: int, seed: int):
    """The minimal random-offset sampler (nanoGPT's get_batch) through kerastrain's step."""
    import keras

    from kerastrain.model.gpt import apply_precision, build_model
    from kerastrain.training.optimizer import make_optimizer, make_schedule
    from kerastrain.training.steps import initial_state, make_steps

    apply_precision(config.model)
    keras.utils.set_random_seed(config.train.seed)
    model = build_model(config.model)
    schedule, _ = make_schedule(config, steps)
    optimizer = make_optimizer(config, schedule, model)
    train_step, eval_step = make_steps(model, optimizer)
    state = initial_state(model, optimizer)
    rng = np.random.default_rng(seed)
    window = config.model.seq_len + 1
    for _ in range(steps):
        starts = rng.integers(0, len(train_tokens) - window, config.train.batch_size)
        batch = train_tokens[starts[:, None] + np.arange(window)[None, :]]
        loss, state = train_step(state, batch[:, :-1], batch[:, 1:])
    float(loss[0])  # [loss, trained tokens]
    for var, value in zip(model.trainable_variables, state[0], strict=True):
        var.assign(value)
    return model, eval_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further `kerastrain run` options for both (e.g. --window-shuffle-size 0)")
    args = parser.parse_args()

    from kerastrain.data.tokenizer import ByteTokenizer
    from kerastrain.model.gpt import build_model
    from kerastrain.training.checkpoint import restore_model
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import make_steps

    docs = stdlib_documents()
    held = [d for i, d in enumerate(docs) if i % 10 == 0]
    train = [d for i, d in enumerate(docs) if i % 10]
    tok = ByteTokenizer()

    def stream(texts):
        return np.concatenate([np.asarray(ids + [tok.eos_id], np.int32)
                               for ids in tok.encode_batch(texts)])

    train_tokens, held_tokens = stream(train), stream(held)
    print(f"corpus: {len(train)} training documents ({len(train_tokens):,} tokens, mean "
          f"{len(train_tokens) // len(train):,} per document), {len(held)} held out "
          f"({len(held_tokens):,} tokens); budget {args.steps} x {args.batch_size} x "
          f"{args.seq_len} = {args.steps * args.batch_size * args.seq_len:,} tokens")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"text": d}) + "\n" for d in train))
        out = Path(tmp) / "run"
        argv = run_args(args, data, out)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kerastrain", "run", *argv],
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stdout + done.stderr)
        kt_seconds = time.perf_counter() - start
        config = config_for(argv)
        config = config.replace(model=config.model.replace(vocab_size=tok.vocab_size))
        model = build_model(config.model)
        restore_model(model, out / "final_checkpoint")
        _, eval_step = make_steps(model, make_optimizer(config, 1e-3, model))
        kt_loss = held_out_loss(model, eval_step, held_tokens, args.seq_len, 64)
        start = time.perf_counter()
        model, eval_step = train_sampler(config, train_tokens, args.steps, args.seed)
        sampler_seconds = time.perf_counter() - start
        sampler_loss = held_out_loss(model, eval_step, held_tokens, args.seq_len, 64)
    print(f"kerastrain run:         held-out loss {kt_loss:.4f} ({kt_seconds:.0f} s with startup)")
    print(f"random-offset sampler:  held-out loss {sampler_loss:.4f} ({sampler_seconds:.0f} s)")
    print(f"kerastrain / sampler: {kt_loss / sampler_loss:.4f} (target <= 1.005)")


if __name__ == "__main__":
    main()
