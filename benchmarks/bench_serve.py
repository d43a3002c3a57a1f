"""kerastrain serve under load: time to first token and output tokens/s for 1, 4 and 16
concurrent streams, against the same model's ``generate`` alone.

The model is a preset's shape with random weights (speed does not depend on what was learned),
the byte tokenizer and the built-in ChatML template; every stream asks for ``--tokens`` tokens
at temperature 0 with ``logprobs`` on, so each token arrives as its own server-sent event (the
first event carrying a token is the time to first token). The server runs in this process on a
free port (uvicorn in a thread), and the clients are httpx streams in threads.

    KERAS_BACKEND=jax uv run python benchmarks/bench_serve.py --preset nano --tokens 48
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("KERAS_BACKEND", "jax")


def stream_one(url: str, question: str, tokens: int) -> tuple[float, int]:
    """(seconds to the first token, tokens received) of one streamed chat completion."""
    import httpx

    body = {"model": "bench", "messages": [{"role": "user", "content": question}],
            "max_tokens": tokens, "temperature": 0, "logprobs": True, "stream": True}
    start, first, count = time.perf_counter(), None, 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:])["choices"]:
                if choice.get("logprobs"):
                    first = first or time.perf_counter() - start
                    count += 1
    return first, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--streams", default="1,4,16")
    args = parser.parse_args()

    import keras
    import uvicorn

    from kerastrain.data.chat_template import load_chat_template
    from kerastrain.data.tokenizer import ByteTokenizer
    from kerastrain.model.decoder import generate_ids, make_sampler
    from kerastrain.model.gpt import build_model
    from kerastrain.model.presets import preset_config
    from kerastrain.serve.engine import BatchingEngine
    from kerastrain.serve.openai_api import Served, build_app

    keras.utils.set_random_seed(0)
    tokenizer = ByteTokenizer()
    model = build_model(preset_config(args.preset, vocab_size=tokenizer.vocab_size))
    template = load_chat_template()
    streams = [int(s) for s in args.streams.split(",")]
    questions = [f"Question number {i}: what comes next?" for i in range(max(streams))]
    prompt = tokenizer.encode_batch([template.render(
        [{"role": "user", "content": questions[0]}], add_generation_prompt=True)])[0]

    greedy = make_sampler(temperature=0)
    generate_ids(model, prompt, args.tokens, greedy)  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        new = generate_ids(model, prompt, args.tokens, greedy)
        times.append(time.perf_counter() - start)
    alone = len(new) / statistics.median(times)
    print(f"{args.preset}: generate alone (one request, 1 slot): {len(new)} tokens in "
          f"{statistics.median(times):.3f} s = {alone:.1f} tokens/s")

    engine = BatchingEngine(model, slots=max(streams))
    server = uvicorn.Server(uvicorn.Config(build_app(Served("bench", tokenizer, template, engine)),
                                           host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    print(f"serve ({max(streams)} slots), {args.tokens} tokens per stream, temperature 0:")
    for n in streams:
        with ThreadPoolExecutor(n) as pool:  # compile the step at this width first
            list(pool.map(lambda q: stream_one(url, q, 4), questions[:n]))
        start = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda q: stream_one(url, q, args.tokens), questions[:n]))
        wall = time.perf_counter() - start
        firsts = [r[0] for r in results]
        total = sum(r[1] for r in results)
        print(f"  {n:2d} streams: time to first token median {statistics.median(firsts):.3f} s, "
              f"max {max(firsts):.3f} s; {total / wall:.1f} output tokens/s in all "
              f"({total / wall / n:.1f} per stream); {total / wall / alone:.2f}x generate alone")
    server.should_exit = True


if __name__ == "__main__":
    main()
