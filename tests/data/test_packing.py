"""Packed examples: each row's segments are whole examples (or truncated / dropped ones, counted),
labels are -1 where nothing is trained, and a resumed pipeline packs the very same rows."""

from __future__ import annotations

import hashlib

import numpy as np

from kerastrain.data.chat_template import ChatTemplate
from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.formats import ChatFormat, Example, FormatContext, TextFormat
from kerastrain.data.packing import META, META_EXAMPLES, RowPacker
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


def test_rows_hold_whole_examples_with_their_own_segments():
    packer = RowPacker(8, pad_id=99)
    rows = []
    for ids, mask in (([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], None), ([8, 9, 10, 11, 12], None)):
        rows += packer.add(Example(ids, None if mask is None else [bool(m) for m in mask]))
    rows.append(packer.flush())
    inputs, labels, segments, tags, meta = rows[0]
    assert tags.tolist() == [0] * 8 and meta[META_EXAMPLES] == 2
    assert inputs.tolist() == [1, 2, 3, 5, 6, 99, 99, 99]
    assert labels.tolist() == [-1, 3, 4, 6, 7, -1, -1, -1]  # prompt tokens and padding: -1
    assert segments.tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    assert rows[1][0].tolist()[:3] == [8, 9, 10] and rows[1][2].tolist()[:3] == [1, 1, 1]


def test_overlong_examples_are_truncated_or_dropped_and_counted_text_is_split():
    long = Example(list(range(20)), [False] * 5 + [True] * 15)
    truncate = RowPacker(8)
    assert truncate.add(long) == []
    row = truncate.flush()
    assert row[0].tolist() == list(range(8))
    assert row[META].tolist()[:3] == [1, 0, 1]  # truncated, dropped, examples: in its row
    drop = RowPacker(8, overlong="drop")
    assert drop.add(long) == []
    assert drop.flush()[META].tolist()[:3] == [0, 1, 0]  # a row of padding carries the count
    assert drop.flush() is None
    prompt_only = RowPacker(8)  # the trained tokens lie past --seq-len: nothing left to train
    prompt_only.add(Example(list(range(20)), [False] * 12 + [True] * 8))
    assert prompt_only.add(Example([1, 2, 3])) == []
    row = prompt_only.flush()
    assert row[META].tolist()[:3] == [0, 1, 1] and row[2].tolist()[:2] == [1, 1]
    text = RowPacker(8)  # plain text is cut into pieces: every label kept once
    rows = text.add(Example(list(range(20)), None, whole=False)) + [text.flush()]
    labels = np.concatenate([r[1][r[1] >= 0] for r in rows])
    assert labels.tolist() == list(range(1, 20))
    assert [r[META].tolist()[:3] for r in rows] == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]


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
    packer = RowPacker(8, pad_id=99, several=False)
    rows = []
    for ids in ([1, 2, 3, 4], [5, 6, 7], [8, 9]):
        rows += packer.add(Example(ids))
    rows.append(packer.flush())
    assert [r[0].tolist() for r in rows] == [[1, 2, 3] + [99] * 5, [5, 6] + [99] * 6,
                                             [8] + [99] * 7]
    assert all(set(r[2].tolist()) <= {0, 1} for r in rows)

    def trained(pipeline):  # the trained labels, in stream order
        return [t for b in pipeline for row in b.labels for t in row.tolist() if t >= 0]

    one_per_row = list(_chat_pipeline(packing=False, epochs=1, drop_remainder=False))
    packed = list(_chat_pipeline(epochs=1, drop_remainder=False))
    assert all(b.segments.max() == 1 for b in one_per_row)
    assert max(b.segments.max() for b in packed) > 1 and len(one_per_row) > len(packed)
    assert trained(one_per_row) == trained(packed)  # the same examples, in the same order
