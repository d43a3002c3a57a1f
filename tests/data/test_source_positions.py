"""A resume seeks each source to its own saved position: the saved state holds positions and
counters, never a document or a token, and the batches after it are exactly those of an
uninterrupted run (one worker or two, a process's share)."""

import hashlib
import json

import pytest

from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer

DOCS = [f"page {i} " + "text " * (i % 17) for i in range(600)]


def _digest(batch):
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest()


def _shards(tmp_path):
    """A positioned source: parquet shards through the hf plugin's ShardStream."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from kerastrain_hf.documents import DecodeCounter
    from kerastrain_hf.shards import ShardStream

    files = []
    for s in range(4):
        path = tmp_path / f"shard-{s}.parquet"
        pq.write_table(pa.table({"text": DOCS[s * 150:(s + 1) * 150]}), path, row_group_size=30)
        files.append(str(path))
    return ShardStream(files, "parquet", "text", "shards", DecodeCounter())


@pytest.mark.parametrize("kind,workers", [("memory", 1), ("shards", 1), ("share", 2)])
def test_resume_is_exact_and_the_saved_state_holds_no_text(tmp_path, kind, workers):
    docs = {"memory": lambda: InMemoryDocuments(DOCS), "shards": lambda: _shards(tmp_path),
            "share": lambda: _shards(tmp_path)}[kind]
    process = (1, 2) if kind == "share" else (0, 1)

    def pipeline():
        return StreamingTextPipeline(docs(), ByteTokenizer(), seq_len=32, batch_size=4,
                                     shuffle_buffer_size=100, seed=5, epochs=2, workers=workers,
                                     window_shuffle_size=64, process=process)

    full = list(pipeline())
    late = max(range(len(full)), key=lambda k: (full[k].state.epoch == 0, k))  # epoch 0's end
    for k in (5, len(full) // 4, late, len(full) - 3):
        state = full[k].state
        state.save(tmp_path / "state.json.gz")
        text = json.dumps(state.saved())
        assert "page" not in text and len(text) < 2000, (k, len(text))
        if kind == "shards":  # the source's position: [shard, row], where a window began
            assert all(s["position"] is None or len(s["position"]) == 2
                       for s in state.source_states())
        resumed = pipeline()
        resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
        assert [_digest(b) for b in resumed] == [_digest(b) for b in full[k + 1:]], k


def test_a_state_saved_before_grain_is_a_one_line_refusal():
    from kerastrain.errors import ConfigError

    with pytest.raises(ConfigError, match="before Grain"):
        PipelineState.from_dict({"epoch": 0, "next_doc": 3, "buffer": ["a"]})
