"""Benchmarks of the data path, on generated prose (every Python has it, no download).

1. Throughput: tokens/s of the trained tokenizer's raw ``encode_batch`` against tokens/s of the
   whole ``StreamingTextPipeline`` (``hf`` source reading a local JSONL file, shuffle buffer,
   tokenization, packing, batching) on the same text in one run. Target: ratio >= 0.8.
2. Workers (``--compare-workers 1,2``): tokens/s of the pipeline alone (documents in memory,
   shuffle, tokenize, pack, batch; no source reading, no training step) for each worker count,
   run alternately in one process and best of ``--repeats`` each, so that other work on a shared
   machine slows every count alike; timed from the pipeline's creation (the worker processes'
   start-up included) and, in a second pass, from the first batch on (the workers up). Batches
   and saved states are checked equal across repeats of each count (1 worker: both passes time
   the same work, so the best of both is its time in both). Goal: 2 workers >= 1.7x one.
3. State (``--state-bytes``): the bytes of the pipeline state a checkpoint saves per process
   (gzipped JSON, ``PipelineState.save``) at the run defaults (shuffle buffer 10000 documents,
   window shuffle 1024) on web-like documents of about 4 KB, and what each part weighs.
4. Memory: peak RSS of a subprocess that streams a small and a large generated corpus through
   the ``hf`` source and the pipeline. Target: large within 10 % of small.

    uv run python benchmarks/bench_pipeline.py                    # 20 MB; 10 MB vs 1 GB
    uv run python benchmarks/bench_pipeline.py --memory-large-mb 100 --throughput-mb 5   # quick
    uv run python benchmarks/bench_pipeline.py --compare-workers 1,2 --throughput-mb 10

The corpus is ``pydoc_data.topics`` plus the standard library's docstrings (~2 MB of distinct
text), one document each, repeated in a new shuffled order until the requested size is reached.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

# Measured faster than two threads on a 2-core machine (see FACTS.md); both sides use the same.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SKIPPED_STDLIB = {"tkinter", "idlelib", "test", "tests", "lib2to3", "ensurepip", "site-packages",
                  "turtledemo", "__pycache__"}  # fmt: skip


def prose_documents() -> list[str]:
    """pydoc topics and stdlib docstrings longer than 40 characters, in a fixed order."""
    import pydoc_data.topics

    docs = list(pydoc_data.topics.topics.values())
    root = sysconfig.get_paths()["stdlib"]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_STDLIB)
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(folder, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            for node in ast.walk(tree):
                if isinstance(node, kinds):
                    text = ast.get_docstring(node)
                    if text and len(text) > 40:
                        docs.append(text)
    return docs


def write_corpus(docs: list[str], path: Path, megabytes: float, seed: int = 0) -> int:
    """Write shuffled repeats of ``docs`` as JSONL until ``megabytes``; return bytes written."""
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    written = 0
    order = list(range(len(docs)))
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(order)
            for i in order:
                line = json.dumps({"text": docs[i]}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
    return written


def train_tokenizer(docs: list[str], vocab_size: int, path: Path) -> None:
    from kerastrain.data.tokenizer import BPEKind

    BPEKind().train(docs, vocab_size).save(path)


def _pipeline(docs, tokenizer, args):
    from kerastrain.data.pipeline import StreamingTextPipeline

    return StreamingTextPipeline(
        docs,
        tokenizer,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        shuffle_buffer_size=args.shuffle_buffer,
        epochs=1,
        workers=args.workers,
    )


def bench_throughput(args, workdir: Path, docs: list[str], tokenizer_path: Path) -> None:
    from kerastrain_hf import HFSource

    from kerastrain.data.examples import ENCODE_CHUNK_DOCS
    from kerastrain.data.sources import SourceRequest
    from kerastrain.data.tokenizer import BPEKind

    corpus = workdir / "throughput.jsonl"
    size = write_corpus(docs, corpus, args.throughput_mb)
    tokenizer = BPEKind().load(tokenizer_path)
    texts = [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")]

    import datasets  # noqa: F401  (a one-time start-up cost of ~2.5 s, not throughput)

    def raw() -> int:
        # The same chunks of documents the pipeline hands to encode_batch.
        tokens = 0
        for lo in range(0, len(texts), ENCODE_CHUNK_DOCS):
            chunk = texts[lo : lo + ENCODE_CHUNK_DOCS]
            tokens += sum(len(ids) for ids in tokenizer.encode_batch(chunk))
        return tokens

    def pipeline() -> int:
        # From the file on disk through the hf source (streaming), shuffle, pack and batch.
        documents = HFSource().open(SourceRequest(str(corpus), streaming=True))
        batches = sum(1 for _ in _pipeline(documents, tokenizer, args))
        return batches * args.batch_size * args.seq_len  # tokens delivered to training

    # Alternate the two and keep each one's best time: other work on a shared machine slows
    # whichever happens to run beside it.
    raw_s = pipe_s = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        raw_tokens = raw()
        raw_s = min(raw_s, time.perf_counter() - started)
        started = time.perf_counter()
        pipe_tokens = pipeline()
        pipe_s = min(pipe_s, time.perf_counter() - started)

    raw_rate, pipe_rate = raw_tokens / raw_s, pipe_tokens / pipe_s
    print(f"corpus: {size / 1e6:.1f} MB JSONL, {len(docs)} distinct documents, "
          f"vocab {tokenizer.vocab_size}, TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}")  # fmt: skip
    print(f"raw encode_batch: {raw_tokens:,} tokens in {raw_s:.2f} s = {raw_rate:,.0f} tokens/s")
    print(f"whole pipeline:   {pipe_tokens:,} tokens in {pipe_s:.2f} s = {pipe_rate:,.0f} tokens/s "
          f"(hf source + shuffle {args.shuffle_buffer} + pack + batch {args.batch_size}x{args.seq_len})")  # fmt: skip
    print(f"ratio pipeline/raw: {pipe_rate / raw_rate:.3f} (target >= 0.8; best of {args.repeats}; "
          f"{args.workers} worker(s), {os.cpu_count()} cores)")


def bench_workers(args, workdir: Path, docs: list[str], tokenizer_path: Path) -> None:
    import hashlib

    from kerastrain.data.corpus import InMemoryDocuments
    from kerastrain.data.tokenizer import BPEKind

    corpus = workdir / "workers.jsonl"
    write_corpus(docs, corpus, args.throughput_mb)
    texts = [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")]
    documents = InMemoryDocuments(texts)
    tokenizer = BPEKind().load(tokenizer_path)
    counts = [int(c) for c in args.compare_workers.split(",")]
    best = {c: float("inf") for c in counts}  # from the pipeline's creation (workers start)
    steady = {c: float("inf") for c in counts}  # with its workers up
    digests: dict[int, str] = {}
    ceiling = {c: float("inf") for c in counts}  # the machine's: no pipeline, no messages
    tokens = 0
    for _ in range(args.repeats):
        for count in counts:
            args.workers = count
            # Once with the clock started at the pipeline's creation (the workers start up
            # meanwhile, while this process encodes alone), once after the workers are up (a
            # training run makes its pipeline before compiling the model, so they are).
            warm = _pipeline(documents, tokenizer, args)
            it = iter(warm)
            # Grain starts its worker processes at the first batch and takes their batches in
            # turn: one batch from each is the point where every worker is up (each imports
            # Grain and JAX first, ~2 s here).
            skipped = sum(1 for _ in itertools.islice(it, count))
            started = time.perf_counter()
            warm_batches = sum(1 for _ in it)
            steady[count] = min(steady[count], (time.perf_counter() - started)
                                * (warm_batches + skipped) / max(warm_batches, 1))
            warm.close()
            digest, states = hashlib.sha1(), []
            started = time.perf_counter()
            pipeline = _pipeline(documents, tokenizer, args)
            batches = 0
            for batch in pipeline:
                digest.update(batch.inputs.tobytes())
                batches += 1
                if batches % 50 == 0:
                    states.append(batch.state)  # compared after the clock stops
            ended = time.perf_counter()
            pipeline.close()  # the worker processes exit
            best[count] = min(best[count], ended - started)
            tokens = batches * args.batch_size * args.seq_len
            for state in states + [batch.state]:
                digest.update(json.dumps(state.saved(), default=lambda o: o.tolist()).encode())
            digests.setdefault(count, set()).add(digest.hexdigest())
        for count in counts:
            ceiling[count] = min(ceiling[count], parallel_encode(tokenizer_path, texts, count))
    same = all(len(d) == 1 for d in digests.values())
    print(f"workers: {len(texts):,} documents ({args.throughput_mb:g} MB), {tokens:,} tokens; "
          f"best of {args.repeats}, counts alternated; {os.cpu_count()} cores; "
          f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}")
    if 1 in best:  # with no worker processes both passes time the same work: the best of both
        best[1] = steady[1] = min(best[1], steady[1])
    base = counts[0]
    for count in counts:
        print(f"  {count} worker(s): {tokens / best[count]:,.0f} tokens/s ({best[count]:.2f} s; "
              f"{best[base] / best[count]:.2f}x {base}); with the workers up "
              f"{tokens / steady[count]:,.0f} tokens/s ({steady[base] / steady[count]:.2f}x {base})")
    print(f"  batches and saved states (every 50th and the last) identical in every repeat of a "
          f"worker count: {same} (Grain's workers each read every N-th document: the batches "
          "differ between counts, and a resume keeps the count)")
    print("  the machine's ceiling, encode_batch alone on the same documents split among "
          "independent processes: " + ", ".join(
              f"{count}: {ceiling[base] / ceiling[count]:.2f}x {base}" for count in counts))


PARALLEL_ENCODE = """
import json, sys, time
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))[int(sys.argv[3])::int(sys.argv[4])]
sys.stdin.readline()  # every process loaded: start together
started = time.time()
for lo in range(0, len(texts), 256):
    tokenizer.encode_batch(texts[lo : lo + 256], add_special_tokens=False)
print(started, time.time())
"""


def parallel_encode(tokenizer_path: Path, texts: list[str], count: int) -> float:
    """Seconds for ``count`` independent processes to encode a share of ``texts`` each, side by
    side: how far this machine's cores scale with no pipeline and no messages between them."""
    path = tokenizer_path.with_name("ceiling.json")
    if not path.exists():
        path.write_text(json.dumps(texts), encoding="utf-8")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, "-c", PARALLEL_ENCODE, str(tokenizer_path),
                               str(path), str(i), str(count)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for i in range(count)]
    time.sleep(1.0 + 0.5 * count)  # loading the texts and the tokenizer is not timed
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = [[float(t) for t in proc.communicate()[0].split()] for proc in procs]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def bench_state_bytes(args, workdir: Path, docs: list[str], tokenizer_path: Path) -> None:
    import gzip

    from kerastrain.config import DataConfig
    from kerastrain.data.pipeline import StreamingTextPipeline
    from kerastrain.data.tokenizer import BPEKind

    defaults = DataConfig()
    class WebPages:
        """Pages of about 4 KB, as a web crawl's; page i is a pure function of i."""

        def __len__(self) -> int:
            return 10**9

        def iter_from(self, start: int):
            for i in itertools.count(start):
                rng, page = random.Random(i), ""
                while len(page) < 4000:
                    page += rng.choice(docs) + "\n"
                yield page

    # Past a few shuffle buffers, where the state is in its steady state.
    target = 5 * defaults.shuffle_buffer_size
    pipeline = StreamingTextPipeline(
        WebPages(), BPEKind().load(tokenizer_path), seq_len=args.seq_len,
        batch_size=args.batch_size, shuffle_buffer_size=defaults.shuffle_buffer_size,
        window_shuffle_size=defaults.window_shuffle_size, epochs=None, workers=args.workers)
    state = None
    started = time.perf_counter()
    for batch in pipeline:
        state = batch.state
        if max(s["index"] for s in state.source_states()) >= target:
            break
    taken = max(s["index"] for s in state.source_states())
    print(f"state: pages of ~4 KB, {taken:,} taken from the source in "
          f"{time.perf_counter() - started:.0f} s; shuffle buffer {defaults.shuffle_buffer_size}, "
          f"window shuffle {defaults.window_shuffle_size}, {args.batch_size}x{args.seq_len}")
    path = workdir / "pipeline_state.json.gz"
    state.save(path)
    print(f"  saved state: {path.stat().st_size:,} bytes (gzipped JSON)")
    for name, value in state.saved().items():
        raw = json.dumps(value, default=lambda o: o.tolist()).encode()
        print(f"  {name:16s} {len(raw):>12,} bytes JSON, {len(gzip.compress(raw)):>12,} gzipped")


def memory_child(corpus: str, tokenizer_path: str, args) -> None:
    """Stream ``corpus`` through the hf source and the pipeline; print peak RSS as JSON."""
    import psutil
    from kerastrain_hf import HFSource

    from kerastrain.data.sources import SourceRequest
    from kerastrain.data.tokenizer import BPEKind

    tokenizer = BPEKind().load(Path(tokenizer_path))
    documents = HFSource().open(SourceRequest(corpus, streaming=True))
    baseline = psutil.Process().memory_info().rss
    started = time.perf_counter()
    batches = 0
    for _ in _pipeline(documents, tokenizer, args):
        batches += 1
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss": peak_kb * 1024, "baseline_rss": baseline, "batches": batches,
                      "seconds": time.perf_counter() - started}))  # fmt: skip


def bench_memory(args, workdir: Path, docs: list[str], tokenizer_path: Path) -> None:
    results = {}
    for label, megabytes in (("small", args.memory_small_mb), ("large", args.memory_large_mb)):
        corpus = workdir / f"memory_{label}.jsonl"
        size = write_corpus(docs, corpus, megabytes, seed=1)
        command = [sys.executable, __file__, "--memory-child", str(corpus), str(tokenizer_path),
                   "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
                   "--shuffle-buffer", str(args.shuffle_buffer)]  # fmt: skip
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        corpus.unlink()
        results[label] = result
        tokens = result["batches"] * args.batch_size * args.seq_len
        print(f"memory {label}: {size / 1e6:,.0f} MB streamed, {tokens:,} tokens in "
              f"{result['seconds']:.0f} s; RSS after setup {result['baseline_rss'] / 2**20:.0f} MiB, "
              f"peak {result['peak_rss'] / 2**20:.0f} MiB")  # fmt: skip
    ratio = results["large"]["peak_rss"] / results["small"]["peak_rss"]
    print(f"peak RSS large/small: {ratio:.3f} (target within 10%: <= 1.10)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--throughput-mb", type=float, default=20)
    parser.add_argument("--memory-small-mb", type=float, default=10)
    parser.add_argument("--memory-large-mb", type=float, default=1000)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shuffle-buffer", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=1, help="tokenizer processes in the pipeline")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs (best kept)")
    parser.add_argument("--compare-workers", metavar="N,M",
                        help="only the worker comparison, for these worker counts")
    parser.add_argument("--state-bytes", action="store_true",
                        help="only the size of a checkpoint's pipeline state")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--workdir", help="where to write the generated corpora (default: a temp dir)"
    )
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("CORPUS", "TOKENIZER"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child, args)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        docs = prose_documents()
        tokenizer_path = workdir / "tokenizer.json"
        started = time.perf_counter()
        train_tokenizer(docs, args.vocab_size, tokenizer_path)
        print(f"tokenizer: byte-level BPE {args.vocab_size} trained on "
              f"{sum(map(len, docs)) / 1e6:.1f}M chars in {time.perf_counter() - started:.1f} s")  # fmt: skip
        if args.state_bytes:
            bench_state_bytes(args, workdir, docs, tokenizer_path)
            return
        if args.compare_workers:
            bench_workers(args, workdir, docs, tokenizer_path)
            return
        if not args.skip_throughput:
            bench_throughput(args, workdir, docs, tokenizer_path)
        if not args.skip_memory:
            bench_memory(args, workdir, docs, tokenizer_path)


if __name__ == "__main__":
    main()
