"""Do fine-tuned chat models stop? The share of sampled replies that end with the turn-end token.

bench_sft.py's "Repeat: w1 w2 w3" task (answers computed from the prompt), fine-tuned three ways,
same model, data, steps and seed:

* ``chatml-fresh``: the built-in ChatML template, a tokenizer trained on the chat data;
* ``chatml-reused``: the same after pretraining on the embedded corpus: ``--init-from`` its
  checkpoint reuses its tokenizer, which gains ``<|im_start|>``/``<|im_end|>`` (the embedding
  grows);
* ``llama31-file``: Llama 3.1's real template (``--chat-template`` the test data's copy), whose
  ``<|eot_id|>`` is added to a fresh tokenizer;
* ``control-1-step``: ``chatml-fresh`` after one update, which shows the measure can fail.

Then ``--replies`` held-out prompts are answered by sampling (temperature 0.8, seed 0) through the
template with the turn-end ids ``kerastrain chat`` stops at; a reply stops when it ends with one
within ``--max-new-tokens`` ("stopped"; "at marker": with the template's own turn-end marker,
``<|im_end|>`` or ``<|eot_id|>``, rather than EOS).

    python benchmarks/bench_stop.py --steps 300 --replies 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))
LLAMA31 = (Path(__file__).parents[1] / "tests" / "data" / "templates"
           / "meta-llama-Llama-3.1-8B-Instruct.jinja")


def stopping_share(out: Path, prompts: list[str], max_new_tokens: int) -> tuple[float, float, int]:
    """(the share of replies that end with a turn-end id, the share that end with the
    template's turn-end marker itself, the number of turn-end ids)."""
    from kerastrain.model.chat import Conversation
    from kerastrain.model.decoder import make_sampler
    from kerastrain.model.loading import chat_template_of, load

    model, tokenizer = load(out)
    sampler = make_sampler(0.8, seed=0)
    chat = Conversation(model, tokenizer, chat_template_of(out), sampler,
                        max_new_tokens=max_new_tokens)
    marker = tokenizer.encode_batch([chat.template.turn_end])[0]
    stopped = at_marker = 0
    for prompt in prompts:
        chat.reset()
        chat.messages.append({"role": "user", "content": prompt})
        ids = list(chat.decoder.stream(chat.prompt_ids(), max_new_tokens, sampler, chat.stops))
        stopped += bool(ids) and ids[-1] in chat.stops
        at_marker += len(marker) == 1 and bool(ids) and ids[-1] == marker[0]
    return stopped / len(prompts), at_marker / len(prompts), len(chat.stops)


def run(out: Path, *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kerastrain", "run", "--output-dir", str(out),
                           *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kerastrain run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    from bench_sft import conversations, corpus_words, record

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--words", type=int, default=50)
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants to run (default: all)")
    args = parser.parse_args()

    words = corpus_words(args.words)
    train = conversations(words, 2000, seed=0)
    held_out = conversations(words, args.replies, seed=1, exclude=set(train))
    prompts = [record(w, "repeat")["messages"][0]["content"] for w in held_out]
    root = Path(tempfile.mkdtemp(prefix="bench_stop_"))
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(record(w, "repeat")) + "\n" for w in train))
    model = ["--d-model", "64", "--num-layers", "2", "--num-heads", "2", "--d-ff", "256",
             "--seq-len", "128", "--batch-size", "16", "--dropout-rate", "0", "--seed", "0",
             "--eval-every", "100000", "--warmup-steps", "10"]
    chat = [*model, "--dataset-id", str(data), "--max-steps", str(args.steps),
            "--learning-rate", "3e-3"]
    pretrained = root / "pretrained"
    if args.variants is None or "chatml-reused" in args.variants:
        run(pretrained, *model, "--vocab-size", "1024", "--max-steps", "20",
            "--max-train-examples", "2000")
    variants = {
        "chatml-fresh": ["--vocab-size", "1024"],
        "chatml-reused": ["--init-from", str(pretrained / "final_checkpoint")],
        "llama31-file": ["--vocab-size", "1024", "--chat-template", str(LLAMA31)],
        # A control: one update has not learnt to end a turn, so the measure can fail.
        "control-1-step": ["--vocab-size", "1024", "--max-steps", "1", "--warmup-steps", "0"],
    }
    print(f"{len(train)} training conversations, {args.steps} updates, d_model 64, 2 layers; "
          f"{len(prompts)} sampled replies (temperature 0.8), --max-new-tokens "
          f"{args.max_new_tokens}")
    print(f"{'variant':<14} {'stopped':>8} {'at marker':>9} {'stop ids':>8} {'run s':>6}")
    for name, extra in variants.items():
        if args.variants is not None and name not in args.variants.split(","):
            continue
        seconds = run(root / name, *chat, *extra)
        share, marker, stops = stopping_share(root / name, prompts, args.max_new_tokens)
        print(f"{name:<14} {share:>8.1%} {marker:>9.1%} {stops:>8} {seconds:>6.0f}",
              flush=True)


if __name__ == "__main__":
    main()
