"""Every bundled source trains a model end to end, and resumes exactly through the pipeline."""

import hashlib
import json

import pytest

from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.sources import SourceRequest
from kerastrain.data.tokenizer import ByteTokenizer
from tests.helpers import TINY, kerastrain

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def write_jsonl(path, n=400, key="text"):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({key: f"record {i}: " + " ".join(WORDS[(i + j) % 12]
                                                               for j in range(i % 40))}) + "\n")
    return path


def digests(pipeline, stop=None):
    out = []
    for i, batch in enumerate(pipeline):
        out.append(hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest())
        if stop is not None and i + 1 == stop:
            return out, batch.state
    return out, None


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "map-style"])
@pytest.mark.parametrize("buffer", [1, 64], ids=["no-shuffle", "shuffle"])
def test_hf_source_resumes_exactly_through_the_pipeline(tmp_path, streaming, buffer):
    from kerastrain.data.preparation import resolve_source

    path = write_jsonl(tmp_path / "data.jsonl")
    source, location = resolve_source(str(path))
    docs = source.open(SourceRequest(location, streaming=streaming))

    def pipeline():
        return StreamingTextPipeline(docs, ByteTokenizer(), seq_len=32, batch_size=4,
                                     shuffle_buffer_size=buffer, seed=5, epochs=2)

    full, _ = digests(pipeline())
    head, state = digests(pipeline(), stop=23)
    state.save(tmp_path / "state.json.gz")
    resumed = pipeline()
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    tail, _ = digests(resumed)
    assert head + tail == full


@pytest.mark.slow
@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_local_jsonl_files_train(tmp_path, streaming):
    write_jsonl(tmp_path / "a.jsonl", key="content")
    write_jsonl(tmp_path / "b.jsonl", key="content")
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--dataset-id",
                      str(tmp_path / "*.jsonl"), "--text-column", "content", streaming,
                      "--epochs", "1", "--log-every", "5")
    assert proc.returncode == 0, proc.stderr
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in train if r["kind"] == "train"]
    assert losses[-1] < losses[0]


def test_hub_id_fails_fast_with_one_line(tmp_path):
    proc = kerastrain("run", "--output-dir", str(tmp_path / "o"), *TINY, "--dataset-id",
                      "roneneldan/TinyStories", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
