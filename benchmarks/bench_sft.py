"""Instruction fine-tuning: a small model learns a task whose answers can be checked exactly.

The task (``--task``): "Reverse: w1 w2 w3 w4" -> "w4 w3 w2 w1", or "Repeat: ..." -> the same
words, the words drawn from the embedded corpus's
most frequent words (no answer is written by hand: each is the prompt's words reversed). Held-out
prompts use word sequences never trained on. Conversations go through the chat format (built-in
ChatML template, markers as special tokens) and are scored by exact match of the greedy reply,
decoded through the same template as ``kerastrain chat`` does (:class:`kerastrain.model.chat.
Conversation`).

Side by side, one run each, same model, data, steps and seed:

* ``assistant-only``: the loss covers assistant turns only (the default);
* ``train-on-prompt``: ``--train-on-prompt``, every token trained;
* ``no-packing``: the default loss with ``--no-packing`` (one example per row) for tokens/s.

Accuracy is measured on the initial weights (before) and the final ones (after).

    python benchmarks/bench_sft.py --task repeat --steps 1000 --learning-rate 3e-3 \
        --throughput-steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")


def corpus_words(count: int) -> list[str]:
    from kerastrain.data.corpus import load_corpus

    words = Counter(w for _, text in load_corpus()
                    for w in re.findall(r"\b[a-z]{3,8}\b", text.lower()))
    return [w for w, _ in words.most_common(count)]


def conversations(words: list[str], n: int, seed: int, exclude: set | None = None):
    import random

    rng = random.Random(seed)
    seen, out = set(exclude or ()), []
    while len(out) < n:
        picked = tuple(rng.sample(words, rng.randint(3, 5)))
        if picked in seen:
            continue
        seen.add(picked)
        out.append(picked)
    return out


TASKS = {  # instruction -> the exact answer, computed from the prompt's words
    "reverse": ("Reverse:", lambda words: " ".join(reversed(words))),
    "repeat": ("Repeat:", lambda words: " ".join(words)),
}


def record(words: tuple, task: str) -> dict:
    instruction, answer = TASKS[task]
    return {"messages": [{"role": "user", "content": f"{instruction} {' '.join(words)}"},
                         {"role": "assistant", "content": answer(words)}]}


def accuracy(path: Path, held_out: list[tuple], task: str, initial: bool = False,
             max_new_tokens: int = 24) -> float:
    """Exact-match accuracy of the run's final model (or, ``initial``, of the weights it started
    from: the same seed and configuration, untrained)."""
    import keras

    from kerastrain.model.chat import Conversation
    from kerastrain.model.decoder import make_sampler
    from kerastrain.model.gpt import build_model
    from kerastrain.model.loading import chat_template_of, load

    model, tokenizer = load(path)
    if initial:
        keras.utils.set_random_seed(0)  # the run's --seed: its initial weights
        model = build_model(model.config)
    chat = Conversation(model, tokenizer, chat_template_of(path), make_sampler(temperature=0),
                        max_new_tokens=max_new_tokens)
    right = 0
    for words in held_out:
        chat.reset()
        conversation = record(words, task)["messages"]
        reply = "".join(chat.reply(conversation[0]["content"]))
        right += reply.strip() == conversation[1]["content"]
    return right / len(held_out)


def metrics(out: Path, kind: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="reverse")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train-examples", type=int, default=4000)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--throughput-steps", type=int, default=None,
                        help="Updates of the no-packing run (it reports tokens/s only)")
    args = parser.parse_args()

    words = corpus_words(args.words)
    train = conversations(words, args.train_examples, seed=0)
    held_out = conversations(words, args.held_out, seed=1, exclude=set(train))
    root = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(record(w, args.task)) + "\n" for w in train))
    common = ["--dataset-id", str(data), "--d-model", str(args.d_model), "--num-layers",
              str(args.num_layers), "--num-heads", "4", "--d-ff", str(4 * args.d_model),
              "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
              "--learning-rate", str(args.learning_rate), "--warmup-steps",
              str(max(1, args.steps // 20)), "--vocab-size", "1024", "--eval-every", "100000",
              "--log-every", "10", "--dropout-rate", "0",
              "--seed", "0"]
    steps = {"no-packing": args.throughput_steps or args.steps}
    variants = {"assistant-only": [], "train-on-prompt": ["--train-on-prompt"],
                "no-packing": ["--no-packing"]}
    print(f"task: {args.task} 3-5 of the corpus's {args.words} commonest words; "
          f"{len(train)} training conversations, {len(held_out)} held out; "
          f"d_model {args.d_model}, {args.num_layers} layers, batch {args.batch_size} x "
          f"{args.seq_len}, {args.steps} updates")
    rows = []
    for name, extra in variants.items():
        out = root / name
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kerastrain", "run", "--output-dir",
                               str(out), *common, *extra, "--max-steps",
                               str(steps.get(name, args.steps)), "--save-every",
                               str(steps.get(name, args.steps))], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{name}: kerastrain run failed:\n{done.stderr[-3000:]}")
        log, summary = metrics(out), metrics(out, "summary")[-1]
        steady = log[1:] or log  # the first record includes the compile
        trained_per_sec = sum(r["trained_tokens"] / (r["step_ms"] / 1000) for r in steady
                              ) / len(steady)
        before = (accuracy(out, held_out, args.task, initial=True) if name == "assistant-only"
                  else None)
        after = accuracy(out, held_out, args.task) if name not in steps else None
        rows.append((name, before, after, summary["last_loss"], summary["tokens_per_sec"],
                     trained_per_sec, seconds))
    print(f"{'variant':<16} {'before':>7} {'after':>7} {'last loss':>9} {'positions/s':>11} "
          f"{'trained tok/s':>13} {'run s':>6}")
    for name, before, after, loss, tps, trained, seconds in rows:
        b = "-" if before is None else f"{before:.1%}"
        a = "-" if after is None else f"{after:.1%}"
        print(f"{name:<16} {b:>7} {a:>7} {loss:>9.3f} {tps:>11.0f} {trained:>13.0f} "
              f"{seconds:>6.0f}")
    print("(last loss: train-on-prompt averages over every token, the others over assistant "
          "tokens only; positions/s counts padding)")


if __name__ == "__main__":
    main()
