"""Packed examples: each row's segments are whole examples (or truncated / dropped ones, counted),
labels are -1 where nothing is trained, and a resumed pipeline packs the very same rows."""

from __future__ import annotations

import hashlib

import grain
import numpy as np

from kerastrain.data.chat_template import ChatTemplate
from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.examples import EncodeChunk
from kerastrain.data.formats import ChatFormat, Example, FormatContext, TextFormat
from kerastrain.data.packing import packed_rows
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer

CHATS = InMemoryDocuments([
    {"messages": [{"role": "user", "content": f"{i}+{i}?" + " pad" * (i % 4)},
                  {"role": "assistant", "content": str(2 * i)}]}
    for i in range(120)
])


def _chat_pipeline(**kw):
    context = FormatContext(tokenizer=ByteTokenizer(), template=ChatTemplate(
        "{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + ';' }}{% endfor %}"
        "{% if add_generation_prompt %}a:{% endif %}"))
    args = dict(seq_len=48, batch_size=3, shuffle_buffer_size=20, seed=3, epochs=2,
                data_format=ChatFormat(), format_context=context, packed=True)
    return StreamingTextPipeline(CHATS, ByteTokenizer(), **{**args, **kw})


def _digest(batch) -> str:
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()
                        + batch.segments.tobytes()).hexdigest()


def _pack(examples, seq_len=8, several=True, overlong="truncate", pad=99):
    """``examples`` through the pipeline's pieces and Grain's packer: the rows, as dicts."""
    encode = EncodeChunk(None, packed=True, seq_len=seq_len, overlong=overlong)
    elements = [{**piece, "epoch": np.int32(0)} for example in examples
                for piece in encode.pieces(example, 0)]
    source = grain.MapDataset.source(elements).to_iter_dataset()
    return list(packed_rows(source, seq_len, pad, several=several))


def test_rows_hold_whole_examples_with_their_own_segments():
    rows = _pack([Example(ids, None if mask is None else [bool(m) for m in mask]) for ids, mask
                  in (([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], None), ([8, 9, 10, 11, 12], None))])
    row = rows[0]
    assert row["tags"].tolist() == [0] * 8 and row["counts"][0] == 2
    assert row["inputs"].tolist() == [1, 2, 3, 5, 6, 99, 99, 99]
    assert row["labels"].tolist() == [-1, 3, 4, 6, 7, -1, -1, -1]  # prompt tokens, padding: -1
    assert row["segments"].tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    assert rows[1]["inputs"].tolist()[:3] == [8, 9, 10]
    assert rows[1]["segments"].tolist()[:3] == [1, 1, 1]


def test_overlong_examples_are_truncated_or_dropped_and_counted_text_is_split():
    long = Example(list(range(20)), [False] * 5 + [True] * 15)
    (row,) = _pack([long])
    assert row["inputs"].tolist() == list(range(8))
    assert row["counts"].tolist() == [1, 1, 0]  # examples, truncated, dropped: in its row
    (row,) = _pack([long], overlong="drop")
    assert row["counts"].tolist() == [0, 0, 1]  # a row of padding carries the count
    assert row["segments"].tolist() == [0] * 8
    # The trained tokens lie past --seq-len: nothing left to train, dropped.
    (row,) = _pack([Example(list(range(20)), [False] * 12 + [True] * 8), Example([1, 2, 3])])
    assert row["counts"].tolist() == [1, 0, 1] and row["segments"].tolist()[:3] == [1, 1, 0]
    rows = _pack([Example(list(range(20)), None, whole=False)])  # plain text is cut in pieces
    labels = np.concatenate([r["labels"][r["labels"] >= 0] for r in rows])
    assert labels.tolist() == list(range(1, 20))  # every label kept once
    assert [r["counts"].tolist() for r in rows] == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]


def test_text_with_document_masking_packs_documents_without_crossing():
    docs = InMemoryDocuments([f"doc {i} " * (1 + i % 3) for i in range(40)])
    pipeline = StreamingTextPipeline(docs, ByteTokenizer(), seq_len=32, batch_size=2,
                                     shuffle_buffer_size=1, epochs=1, data_format=TextFormat(),
                                     format_context=FormatContext(tokenizer=ByteTokenizer()),
                                     packed=True)
    batch = next(iter(pipeline))
    row, segments = batch.inputs[0], batch.segments[0]
    assert bytes(row[segments == 1].tolist()).decode() == "doc 0 "
    assert batch.labels[0][segments == 1][-1] == ByteTokenizer.eos_id  # EOS ends a document
    assert bytes(row[segments == 2].tolist()).decode() == "doc 1 doc 1 "


def test_packed_chat_resume_repeats_nothing_and_skips_nothing(tmp_path):
    full = [_digest(b) for b in _chat_pipeline()]
    assert len(full) > 10 and len(set(full)) == len(full)
    first = _chat_pipeline()
    it = iter(first)
    for _ in range(7):
        batch = next(it)
    path = tmp_path / "state.json.gz"
    batch.state.save(path)
    resumed = _chat_pipeline()
    resumed.restore(PipelineState.load(path))
    assert [_digest(b) for b in resumed] == full[7:]
    # Only assistant answers (and their ';') are trained.
    trained = bytes(batch.labels[batch.labels >= 0].tolist()).decode()
    assert set(trained) <= set("0123456789;")


def test_without_packing_each_row_holds_one_example_and_the_same_trained_tokens():
    rows = _pack([Example(ids) for ids in ([1, 2, 3, 4], [5, 6, 7], [8, 9])], several=False)
    assert [r["inputs"].tolist() for r in rows] == [[1, 2, 3] + [99] * 5, [5, 6] + [99] * 6,
                                                    [8] + [99] * 7]
    assert all(set(r["segments"].tolist()) <= {0, 1} for r in rows)

    def trained(pipeline):  # the trained labels, in stream order
        return [t for b in pipeline for row in b.labels for t in row.tolist() if t >= 0]

    one_per_row = list(_chat_pipeline(packing=False, epochs=1, drop_remainder=False))
    packed = list(_chat_pipeline(epochs=1, drop_remainder=False))
    assert all(b.segments.max() == 1 for b in one_per_row)
    assert max(b.segments.max() for b in packed) > 1 and len(one_per_row) > len(packed)
    assert trained(one_per_row) == trained(packed)  # the same examples, in the same order
