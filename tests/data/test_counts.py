"""Counts describe the batches emitted (what a run trains), not what the pipeline read ahead;
packed rows go through the same row shuffle as plain-text windows."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.formats import FormatContext, TextFormat
from kerastrain.data.mixture import MixedFormat, MixtureDocuments
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer

BYTES = ByteTokenizer()
TEXT = dict(data_format=TextFormat(), format_context=FormatContext(tokenizer=BYTES))


def _whole(docs):
    """Plain-text documents as whole examples (truncated, not split, past --seq-len)."""
    class Whole(TextFormat):
        def encode(self, records, context):
            examples = super().encode(records, context)
            for e in examples:
                e.whole = True
            return examples

    return dict(data_format=Whole(), format_context=FormatContext(tokenizer=BYTES))


def test_overlong_counts_are_of_the_rows_emitted_not_of_the_chunk_read():
    docs = InMemoryDocuments([f"document {i} " * 10 for i in range(300)])  # all > 33 bytes
    pipeline = StreamingTextPipeline(docs, BYTES, seq_len=32, batch_size=8,
                                     shuffle_buffer_size=1, epochs=1, packed=True, drop_remainder=False,
                                     **_whole(docs))
    batches = list(pipeline)
    first = batches[0].state.trained
    # One truncated example fills a row: a batch of 8 rows holds 8 (the chunk read held 256).
    assert (first["truncated"], first["examples"], first["tokens"]) == (8, 8, 8 * 32)
    last = batches[-1].state.trained
    assert (last["truncated"], last["examples"], last["dropped"]) == (300, 300, 0)
    assert last["trained_tokens"] == 300 * 32
    assert len(batches) == 38 and int((batches[-1].labels >= 0).any(axis=1).sum()) == 4


def test_a_mixtures_counts_are_the_tokens_of_each_dataset_in_the_batches():
    """Dataset a's documents are all "a", b's all "b": a token's dataset shows in the batch
    itself, so the per-dataset counts are checked against the batches' own letters."""
    a = InMemoryDocuments(["a" * (1 + i % 13) for i in range(120)])
    b = InMemoryDocuments(["b" * (1 + i % 5) for i in range(80)])
    mixture = MixtureDocuments([a, b], [1.0, 1.0], seed=3, on_exhausted="drop",
                               names=["a", "b"], tags=[0, 1])
    fmt = MixedFormat([TextFormat(), TextFormat()], [FormatContext(), FormatContext()])
    letter = {ord("a"): "a", ord("b"): "b"}
    for packed in (False, True):
        pipeline = StreamingTextPipeline(
            mixture, BYTES, seq_len=16, batch_size=4, shuffle_buffer_size=10, seed=1, epochs=1,
            window_shuffle_size=8, data_format=fmt, format_context=FormatContext(tokenizer=BYTES),
            packed=packed, source_names=["a", "b"], drop_remainder=False)
        want = {name: {"examples": 0, "tokens": 0} for name in "ab"}
        for batch in pipeline:
            for x, y, seg in zip(batch.inputs, batch.labels, batch.segments if packed
                                 else batch.labels, strict=True):
                if packed:  # data positions: the inputs of segments; a segment: an example
                    for j, t in enumerate(x.tolist()):
                        if seg[j] > 0:
                            want[letter[t]]["tokens"] += 1
                            want[letter[t]]["examples"] += j == 0 or seg[j] != seg[j - 1]
                    continue
                for j, t in enumerate(y.tolist()):  # the targets; an EOS is its document's
                    if t >= 0:
                        name = letter.get(t) or letter[x[j]]
                        want[name]["tokens"] += 1
                        want[name]["examples"] += t == BYTES.eos_id
        counts = batch.state.trained
        assert counts["datasets"] == want, packed
        assert want["a"]["examples"] + want["b"]["examples"] == counts["examples"] >= 199
        assert want["a"]["tokens"] + want["b"]["tokens"] == counts["tokens"]


def _digest(batch):
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()
                        + batch.segments.tobytes()).hexdigest()


LONG = InMemoryDocuments([f"<{i:02d}>" + f" book{i:02d}" * 50 for i in range(24)])


def _masked(**kw):
    args = dict(seq_len=16, batch_size=4, shuffle_buffer_size=8, seed=3, epochs=2,
                window_shuffle_size=64, packed=True, **TEXT)
    args.update(kw)
    return StreamingTextPipeline(LONG, BYTES, **args)


def test_packed_rows_of_long_documents_are_shuffled_across_documents_and_resume_exactly(tmp_path):
    def books(batch):
        text = [BYTES.decode([t for t in row.tolist() if t < 256]) for row in batch.inputs]
        return len({m for row in text for m in re.findall(r"book(\d\d)", row)})

    plain = list(_masked(window_shuffle_size=0, epochs=1, drop_remainder=False))
    mixed = list(_masked(epochs=1, drop_remainder=False))
    assert np.mean([books(b) for b in plain]) < 1.5
    # Grain's window shuffle reorders blocks of 64 rows: here ~2.3 books of ~28 rows each.
    assert np.mean([books(b) for b in mixed]) > 2.0

    def rows(batches):
        return sorted(np.stack([b.inputs[i], b.labels[i], b.segments[i]]).tobytes()
                      for b in batches for i in range(len(b.inputs)))

    assert rows(plain) == rows(mixed)  # the same rows, only reordered
    full = [_digest(b) for b in _masked()]
    for stop in (1, 17):
        it = iter(_masked())
        for _ in range(stop):
            batch = next(it)
        batch.state.save(tmp_path / "state.json.gz")
        resumed = _masked()
        resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
        assert [_digest(b) for b in resumed] == full[stop:], stop
