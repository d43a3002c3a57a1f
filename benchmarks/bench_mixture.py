"""A weighted mixture through the real data path: realised shares, resume cost, exactness.

Three generated datasets of different document lengths (web ~4 KB, code ~1 KB, books ~16 KB),
each written as several local JSONL shards, opened by ``kerastrain.data.preparation.open_data``
from ``[[dataset]]``-style entries exactly as ``kerastrain run`` opens them, and read through the
``StreamingTextPipeline`` (byte tokenizer, so no tokenizer training is measured). Prints:

1. the realised share of each dataset's documents and tokens after a growing number of batches,
   against the weights (weights set the documents' shares);
2. a resume from the middle: the batches after it equal the uninterrupted ones, the documents
   each dataset yields again at the resume (the shuffle buffer's re-read window) against the
   documents before the position, and the bytes of the saved pipeline state.

    uv run python benchmarks/bench_mixture.py
    uv run python benchmarks/bench_mixture.py --batches 4000 --weights 0.6,0.3,0.1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
from pathlib import Path

LENGTHS = {"web": 4000, "code": 1000, "books": 16000}  # characters per document, about


def write_dataset(folder: Path, name: str, docs: int, shards: int, seed: int) -> str:
    rng = random.Random(seed)
    words = [f"{name}{i}" for i in range(200)]
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-docs // shards)
    for s in range(shards):
        with open(folder / f"{name}-{s:03d}.jsonl", "w") as f:
            for i in range(s * per, min(docs, (s + 1) * per)):
                n = max(5, int(rng.gauss(LENGTHS[name], LENGTHS[name] / 4)) // 8)
                f.write(json.dumps({"text": f"{name} {i}: " + " ".join(rng.choices(words, k=n))})
                        + "\n")
    return str(folder / f"{name}-*.jsonl")


class Counted:
    """A source's documents, counting those it yields (to see what a resume reads again)."""

    def __init__(self, documents) -> None:
        self.documents, self.yielded = documents, 0

    def __len__(self):
        return len(self.documents)

    def iter_from(self, start):
        for doc in self.documents.iter_from(start):
            self.yielded += 1
            yield doc

    def iter_positioned(self, position):
        for item in self.documents.iter_positioned(position):
            self.yielded += 1
            yield item


def digest(batch) -> str:
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0.7,0.2,0.1", help="web,code,books")
    parser.add_argument("--docs", type=int, default=3000, help="documents per dataset")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--batches", type=int, default=4000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shuffle-buffer", type=int, default=100)
    parser.add_argument("--exhausted", default="restart")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]

    from kerastrain.config import build_run_config
    from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
    from kerastrain.data.preparation import open_data
    from kerastrain.data.tokenizer import ByteTokenizer

    work = Path(tempfile.mkdtemp(prefix="bench_mixture_"))
    entries = [{"id": write_dataset(work / name, name, args.docs, args.shards, k), "weight": w}
               for k, (name, w) in enumerate(zip(LENGTHS, weights, strict=True))]
    config = build_run_config({"data": {"datasets": entries,
                                        "mixture_exhausted": args.exhausted}}, None)
    tokenizer = ByteTokenizer()

    def pipeline():
        data = open_data(config, say=lambda _: None)
        counted = [Counted(d) for d in data.train.sources]
        data.train.sources = counted
        p = StreamingTextPipeline(
            data.train, tokenizer, seq_len=args.seq_len, batch_size=args.batch_size,
            shuffle_buffer_size=args.shuffle_buffer, seed=42, epochs=1, window_shuffle_size=0,
            source_names=data.names, data_format=data.plan.format,
            format_context=data.plan.with_tokenizer(tokenizer))
        return p, data.names, counted

    p, names, _ = pipeline()
    total = sum(weights)
    print("weights (documents): " + ", ".join(f"{n} {w / total:.3f}" for n, w in
                                              zip(names, weights, strict=True)))
    print(f"{'batches':>8}  " + "  ".join(f"{n + ' docs':>10} {n + ' tokens':>11}"
                                         for n in names))
    states, digests = [], []
    checkpoints = {10, 100, 1000, args.batches // 2, args.batches}
    for k, batch in enumerate(p, start=1):
        states.append(batch.state)
        digests.append(digest(batch))
        if k in checkpoints:
            shares = batch.state.source_shares()["mixture_shares"]
            print(f"{k:>8}  " + "  ".join(f"{shares[n]['documents']:>10.3f} "
                                           f"{shares[n]['tokens']:>11.3f}" for n in names))
        if k == args.batches:
            break
    cut = len(states) // 2
    path = work / "state.json.gz"
    states[cut].save(path)
    drawn = states[cut].source_position["taken"]  # each dataset's documents drawn so far
    resumed, _, counted = pipeline()
    resumed.restore(PipelineState.load(path))
    reread = [c.yielded for c in counted]  # what restoring the shuffle buffer read again
    again = [digest(b) for _, b in zip(range(len(digests) - cut - 1), resumed, strict=False)]
    print(f"resume after batch {cut + 1}: the next {len(again)} batches equal the uninterrupted "
          f"run's: {again == digests[cut + 1:]}; saved state {path.stat().st_size:,} bytes")
    window = 4 * args.shuffle_buffer
    for name, d, r in zip(names, drawn, reread, strict=True):
        print(f"  {name}: {d:,} documents drawn before the position; read again at the resume: "
              f"{r:,} (its part of the last {window:,} draws: the shuffle buffer's re-read "
              "window)")

if __name__ == "__main__":
    main()
