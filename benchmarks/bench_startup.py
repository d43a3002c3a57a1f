"""Start-up: the first step of a run with a cold and a warm compilation cache, and how soon
``kerastrain generate`` and ``kerastrain serve`` answer when warm.

For each checkout given (this one, and ``--before DIR``, another checkout of kerastrain run with
``PYTHONPATH=DIR``; the two alternate within each repeat so both meet the same machine load), in
a fresh temporary folder with an empty compilation cache (``KERASTRAIN_COMPILE_CACHE``):

1. ``kerastrain run --preset nano --max-steps N --max-train-examples 2000`` (cold: an empty cache,
   the tokenizer trained), then the same command again with ``--overwrite`` (warm: the cache
   filled, the tokenizer reused). ``first_step_seconds`` of each comes from the run's summary in
   ``metrics.jsonl`` (seconds from the process start to the end of the first update).
2. ``kerastrain generate`` on that run (8 new tokens, greedy) twice: wall seconds of each process,
   the second with the decoder's programs in the cache.
3. ``kerastrain serve`` on that run twice: seconds from the process start until ``/health``
   answers, and until a first one-token ``/v1/completions`` reply arrives.

With ``--importtime`` the warm run is repeated once under ``python -X importtime`` and the
import seconds are summed by top-level package (the largest are printed).

    uv run python benchmarks/bench_startup.py --repeats 2 --before /work/wt-before
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _env(checkout: Path, cache: Path) -> dict:
    """The environment of a command of ``checkout`` (run with ``cwd=checkout``: ``python -m``
    puts the working folder first on ``sys.path``, before ``PYTHONPATH``)."""
    env = dict(os.environ, KERAS_BACKEND="jax", KERASTRAIN_COMPILE_CACHE=str(cache),
               TOKENIZERS_PARALLELISM="false")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if checkout != HERE:
        env["PYTHONPATH"] = str(checkout) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kerastrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "kerastrain", *args]


def _run_args(work: Path, steps: int, examples: int, batch_size: int | None) -> list[str]:
    return ["run", "--preset", "nano", "--max-steps", str(steps), "--max-train-examples",
            str(examples), "--output-dir", str(work / "run"), "--overwrite",
            *(["--batch-size", str(batch_size)] if batch_size else [])]


def first_step(checkout: Path, work: Path, steps: int, examples: int,
               batch_size: int | None) -> float:
    """``first_step_seconds`` of one ``kerastrain run`` in ``work``."""
    cmd = _kerastrain(*_run_args(work, steps, examples, batch_size))
    subprocess.run(cmd, env=_env(checkout, work / "cache"), cwd=checkout, check=True,
                   capture_output=True, timeout=1800)
    rows = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r.get("kind") == "summary")["first_step_seconds"]


def generate_seconds(checkout: Path, work: Path) -> float:
    start = time.perf_counter()
    subprocess.run(_kerastrain("generate", str(work / "run"), "--prompt", "The quick",
                               "--max-new-tokens", "8", "--temperature", "0"),
                   env=_env(checkout, work / "cache"), cwd=checkout, check=True,
                   capture_output=True, timeout=900)
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_seconds(checkout: Path, work: Path) -> tuple[float, float]:
    """(seconds until /health answers, seconds until a first completion arrives)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    proc = subprocess.Popen(_kerastrain("serve", str(work / "run"), "--port", str(port)),
                            env=_env(checkout, work / "cache"), cwd=checkout,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kerastrain serve exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        health = time.perf_counter() - start
        body = json.dumps({"model": "run", "prompt": "The quick", "max_tokens": 1,
                           "temperature": 0}).encode()
        request = urllib.request.Request(url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=900) as r:
            json.loads(r.read())
        return health, time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def import_seconds(checkout: Path, work: Path, steps: int, examples: int,
                   batch_size: int | None, top: int = 8):
    """Import seconds of a warm run, by top-level package (``python -X importtime``)."""
    cmd = [sys.executable, "-X", "importtime",
           *_kerastrain(*_run_args(work, steps, examples, batch_size))[1:]]
    done = subprocess.run(cmd, env=_env(checkout, work / "cache"), cwd=checkout,
                          capture_output=True, text=True, timeout=1800, check=True)
    by_package: collections.Counter = collections.Counter()
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            by_package[m[2].split(".")[0]] += int(m[1]) / 1e6
    return sum(by_package.values()), by_package.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, default=None,
                        help="Another kerastrain checkout to measure alternately (PYTHONPATH)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="Rows per step (default: the run's, 32 × 256 tokens for nano)")
    parser.add_argument("--no-serve", action="store_true", help="Skip generate and serve")
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    checkouts = {"after": HERE}
    if args.before is not None:
        checkouts = {"before": args.before.resolve(), **checkouts}
    results: dict = {name: collections.defaultdict(list) for name in checkouts}
    for repeat in range(args.repeats):
        for name, checkout in checkouts.items():
            with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
                work = Path(tmp)
                r = results[name]
                r["cold"].append(first_step(checkout, work, args.steps, args.max_train_examples,
                                             args.batch_size))
                r["warm"].append(first_step(checkout, work, args.steps, args.max_train_examples,
                                             args.batch_size))
                line = (f"[{repeat + 1}/{args.repeats}] {name}: first step cold "
                        f"{r['cold'][-1]:.1f} s, warm {r['warm'][-1]:.1f} s "
                        f"({r['warm'][-1] / r['cold'][-1]:.2f})")
                if not args.no_serve:
                    r["generate, 1st"].append(generate_seconds(checkout, work))
                    r["generate, 2nd"].append(generate_seconds(checkout, work))
                    health, reply = serve_seconds(checkout, work)
                    r["serve /health, 1st"].append(health)
                    r["serve first reply, 1st"].append(reply)
                    health, reply = serve_seconds(checkout, work)
                    r["serve /health, 2nd"].append(health)
                    r["serve first reply, 2nd"].append(reply)
                    line += (f"; generate {r['generate, 1st'][-1]:.1f} / "
                             f"{r['generate, 2nd'][-1]:.1f} s; serve /health {health:.1f} s, "
                             f"first reply {reply:.1f} s (2nd)")
                print(line, flush=True)
                if args.importtime and repeat == args.repeats - 1:
                    total, top = import_seconds(checkout, work, args.steps,
                                                args.max_train_examples, args.batch_size)
                    print(f"  {name}: imports of a warm run {total:.1f} s: "
                          + ", ".join(f"{pkg} {s:.2f}" for pkg, s in top), flush=True)
    print("\nmedians (seconds):")
    keys = list(next(iter(results.values())))
    print("| what | " + " | ".join(checkouts) + " |")
    print("| --- |" + " --- |" * len(checkouts))
    for key in keys:
        cells = [f"{statistics.median(results[name][key]):.1f}" for name in checkouts]
        print(f"| {key} | " + " | ".join(cells) + " |")
    ratios = [f"{statistics.median(results[n]['warm']) / statistics.median(results[n]['cold']):.2f}"
              for n in checkouts]
    print("| first step warm / cold | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
