"""Preference tuning on a task whose preferences can be checked exactly, packed and not.

The task: ``"Say: word"`` -> ``" word."``, the words drawn from the embedded corpus (held-out
prompts use words never trained on); nothing is written by hand. The SFT data is biased: 60% of
its completions shout the word (``" WORD."``), so the SFT model's greedy answer is mostly wrong.
The preference pairs prefer the right answer (chosen) to a shouted one (rejected), the rejected
replies of uneven lengths (``" WORD."`` or a sentence around it), so pairs differ in length as
real ones do.

Runs, same model, seed and data, one after another:

* ``sft``: the biased SFT run preference tuning starts from;
* ``dpo``, ``simpo``, ``orpo``: ``--init-from`` the SFT checkpoint, packed (the default);
* ``dpo --no-packing``: one pair per row, padded (as TRL's batches are), for throughput.

Reported: held-out reward accuracy (``val_rewards/accuracies`` on held-out pairs), exact match of
greedy answers on held-out prompts before (the SFT model) and after, pairs and trained tokens per
update, the share of padding, and positions/s (padding included) of packed against
one-pair-per-row rows.

    uv run python benchmarks/bench_preference.py --sft-steps 600 --steps 150
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

WRONG = ("{}.", "I say {}.", "{}! {}! I said {}.", "It is {}, surely.")


def corpus_words(count: int) -> list[str]:
    from kerastrain.data.corpus import load_corpus

    words = Counter(w for _, text in load_corpus()
                    for w in re.findall(r"\b[a-z]{3,9}\b", text.lower()))
    return [w for w, _ in words.most_common(count)]


def wrong_answer(word: str, rng: random.Random) -> str:
    return " " + rng.choice(WRONG).format(*[word.upper()] * 3)


def write_data(root: Path, train, held_out) -> tuple[Path, Path]:
    rng = random.Random(0)
    sft = root / "sft"
    pref = root / "pref"
    for folder in (sft, pref):
        folder.mkdir()
    # SFT: 60% of the completions shout (the model has something to unlearn).
    sft_rows = [{"prompt": f"Say: {w}", "completion": f" {w}." if rng.random() < 0.4
                 else f" {w.upper()}."} for w in train for _ in range(2)]
    rng.shuffle(sft_rows)
    (sft / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))

    def pairs(items):
        return "".join(json.dumps({"prompt": f"Say: {w}", "chosen": f" {w}.",
                                   "rejected": wrong_answer(w, rng)}) + "\n" for w in items)

    (pref / "train.jsonl").write_text(pairs(train))
    (pref / "validation.jsonl").write_text(pairs(held_out))
    return sft, pref


def exact_match(path: Path, held_out) -> float:
    from kerastrain.model.decoder import generate_text, make_sampler
    from kerastrain.model.loading import load

    model, tokenizer = load(path)
    sampler = make_sampler(temperature=0)
    right = 0
    for word in held_out:
        prompt = f"Say: {word}"
        reply = generate_text(model, tokenizer, prompt, max_new_tokens=12, sampler=sampler)
        right += reply[len(prompt):].strip() == f"{word}."
    return right / len(held_out)


def metrics(out: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == kind]


def run(out: Path, args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kerastrain", "run", "--output-dir", str(out),
                           *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{out.name}: kerastrain run failed:\n{done.stderr[-3000:]}{done.stdout[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=1600)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=1e-4,
                        help="Preference tuning's peak learning rate")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()

    words = corpus_words(args.words)
    random.Random(0).shuffle(words)
    train, held_out = words[args.held_out:], words[:args.held_out]
    root = Path(tempfile.mkdtemp(prefix="bench_preference_"))
    sft_data, pref_data = write_data(root, train, held_out)
    model = ["--tokenizer", "bytes", "--d-model", str(args.d_model), "--num-layers", "2",
             "--num-heads", "4", "--d-ff", str(4 * args.d_model), "--seq-len", str(args.seq_len),
             "--batch-size", str(args.batch_size), "--dropout-rate", "0", "--seed", "0",
             "--eval-every", "100000", "--log-every", "10", "--window-shuffle-size", "64"]
    sft_out = root / "sft_run"
    sft_seconds = run(sft_out, [*model, "--dataset-id", str(sft_data), "--learning-rate", "3e-3",
                                "--warmup-steps", "20", "--max-steps", str(args.sft_steps)])
    start = sft_out / "final_checkpoint"
    before = exact_match(start, held_out)
    print(f"task: Say: word -> word.; {len(train)} training words, {len(held_out)} held out; "
          f"d_model {args.d_model}, 2 layers, batch {args.batch_size} x {args.seq_len}; SFT "
          f"{args.sft_steps} updates, 60% shouted answers ({sft_seconds:.0f} s), then "
          f"{args.steps} updates of each objective at learning rate {args.learning_rate}")
    variants = {"dpo": ["--objective", "dpo", "--beta", "0.1"],
                "simpo": ["--objective", "simpo", "--beta", "2", "--gamma", "0.5"],
                "orpo": ["--objective", "orpo", "--beta", "0.1"],
                "dpo --no-packing": ["--objective", "dpo", "--beta", "0.1", "--no-packing"]}
    rows = []
    for name, extra in variants.items():
        out = root / name.replace(" ", "_")
        seconds = run(out, [*model, "--dataset-id", str(pref_data), "--init-from", str(start),
                            "--val-split", "validation", "--learning-rate", str(args.learning_rate),
                            "--warmup-steps", "5", "--max-steps", str(args.steps), *extra])
        log, summary = metrics(out, "train"), metrics(out, "summary")[-1]
        (final,) = metrics(out, "eval")[-1:]
        positions = summary["steps"] * args.batch_size * args.seq_len
        padding = 1 - summary["tokens_trained"] / positions
        steady = log[1:] or log
        tps = sum(args.batch_size * args.seq_len / (r["step_ms"] / 1000) for r in steady) / \
            len(steady)
        pairs_per_update = summary["examples_trained"] / summary["steps"]
        after = exact_match(out / "final_checkpoint", held_out)
        rows.append((name, final["val_rewards/accuracies"], after, pairs_per_update,
                     summary["trained_tokens_total"] / summary["steps"], padding, tps, seconds))
    print(f"exact match of greedy answers before (the SFT model): {before:.1%}")
    print(f"{'objective':<17} {'val acc':>7} {'after':>7} {'pairs/upd':>9} {'trained/upd':>11} "
          f"{'padding':>7} {'positions/s':>11} {'run s':>6}")
    for name, acc, after, pairs, trained, padding, tps, seconds in rows:
        print(f"{name:<17} {acc:>7.1%} {after:>7.1%} {pairs:>9.1f} {trained:>11.1f} "
              f"{padding:>7.1%} {tps:>11.0f} {seconds:>6.0f}")
    print("(val acc: held-out pairs whose chosen reward is above the rejected one; after: exact "
          "match of greedy answers to held-out prompts; positions/s counts padding)")


if __name__ == "__main__":
    main()
