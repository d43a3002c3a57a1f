"""The saved shuffle buffer keeps recent documents by index and re-reads them at a resume."""

import hashlib
import json

import pytest

from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.sharding import ProcessShare
from kerastrain.data.tokenizer import ByteTokenizer

DOCS = [f"page {i} " + "text " * (i % 17) for i in range(2000)]


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
        pq.write_table(pa.table({"text": DOCS[s * 500:(s + 1) * 500]}), path, row_group_size=100)
        files.append(str(path))
    return ShardStream(files, "parquet", "text", "shards", DecodeCounter())


@pytest.mark.parametrize("kind", ["memory", "shards", "share"])
def test_resume_rereads_the_buffer_exactly_and_the_saved_state_holds_few_texts(tmp_path, kind):
    docs = {"memory": lambda: InMemoryDocuments(DOCS), "shards": lambda: _shards(tmp_path),
            "share": lambda: ProcessShare(_shards(tmp_path), 1, 2)}[kind]

    def pipeline(workers=1):
        return StreamingTextPipeline(docs(), ByteTokenizer(), seq_len=32, batch_size=4,
                                     shuffle_buffer_size=40, seed=5, epochs=2, workers=workers)

    full = list(pipeline())
    late = max(range(len(full)), key=lambda k: (full[k].state.epoch == 0, k))  # epoch 0's end
    for k in (5, len(full) // 4, late, len(full) - 3):
        state = full[k].state
        state.save(tmp_path / "state.json.gz")
        written = PipelineState.load(tmp_path / "state.json.gz")
        saved = sum(doc is not None for doc in written.buffer)
        if state.next_doc > 4 * 40 and not state.source_done:
            assert written.reread_from is not None and saved < len(state.buffer) // 4, (k, saved)
        resumed = pipeline(workers=2)
        resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
        assert [_digest(b) for b in resumed] == [_digest(b) for b in full[k + 1:]], k


def test_a_state_saved_with_every_text_still_resumes(tmp_path):
    def pipeline():
        return StreamingTextPipeline(InMemoryDocuments(DOCS), ByteTokenizer(), seq_len=32,
                                     batch_size=4, shuffle_buffer_size=40, seed=5, epochs=1)

    full = list(pipeline())
    old = dict(full[29].state.__dict__)  # every buffered text, as states were saved before
    old = {k: v for k, v in old.items() if k not in ("buffer_index", "reread_from")}
    assert all(doc is not None for doc in old["buffer"])
    resumed = pipeline()
    resumed.restore(PipelineState(**json.loads(json.dumps(old))))
    assert [_digest(b) for b in resumed] == [_digest(b) for b in full[30:]]
