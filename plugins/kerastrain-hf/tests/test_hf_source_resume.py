"""A streamed Hugging Face dataset folder (the path hub ids take too: ``load_dataset`` streaming)
resumes at a saved position: exactly the rest of a fresh read, without opening the files of the
shards before it, and a tiny training run resumed from a checkpoint repeats the uninterrupted one.
"""

from __future__ import annotations

import builtins
import collections
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.sources import SourceRequest
from kerastrain.testing import TINY_RUN_ARGS as TINY
from kerastrain.testing import invoke

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from kerastrain_hf.documents import RecordDocuments, StreamDocuments  # noqa: E402
from kerastrain_hf.source import HFSource  # noqa: E402

SIZES = [23, 40, 9, 31, 17]  # rows per shard: uneven, smaller and larger than a batch


def _text(s: int, r: int):
    """Row ``r`` of shard ``s``: some rows are empty or null (not documents)."""
    if r % 6 == 2:
        return ""
    if r % 7 == 4:
        return None
    return f"shard {s} row {r}: " + "word " * ((s + r) % 5)


def _chat(s: int, r: int) -> dict:
    return {"messages": [{"role": "user", "content": f"What is {s} times {r}?"},
                         {"role": "assistant", "content": f"{s * r}." + "!" * (r % 3)}]}


def _folder(tmp_path: Path, kind: str, sizes=SIZES) -> Path:
    """A dataset folder of shards ``train-0000s-of-0000n``, as on the hub."""
    folder = tmp_path / f"data-{kind}"
    folder.mkdir()
    for s, rows in enumerate(sizes):
        name = folder / f"train-{s:05d}-of-{len(sizes):05d}"
        if kind == "parquet":
            texts = [_text(s, r) for r in range(rows)]
            pq.write_table(pa.table({"text": texts, "n": list(range(rows))}),
                           f"{name}.parquet", row_group_size=6)
        else:
            lines = [{"text": _text(s, r), "n": r} if kind == "jsonl" else _chat(s, r)
                     for r in range(rows)]
            Path(f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def _open(folder: Path, records: bool = False):
    docs = HFSource().open(SourceRequest(location=str(folder), streaming=True, records=records))
    assert isinstance(docs, RecordDocuments if records else StreamDocuments)  # not ShardStream
    return docs


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 7 rows and JSON lines read 200 bytes at a time: batches cross the parquet row
    groups and the JSON chunks, and every shard holds several batches."""
    monkeypatch.setattr("kerastrain_hf.documents.BATCH_ROWS", 7)
    monkeypatch.setattr("kerastrain_hf.source.CHUNK_BYTES", 200)


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "chat"])
def test_every_position_resumes_to_the_rest_of_a_fresh_read(tmp_path, kind, small_batches):
    records = kind == "chat"
    docs = _open(_folder(tmp_path, kind), records=records)
    full = list(docs.iter_positioned(None))
    if records:
        expected = [_chat(s, r) for s, rows in enumerate(SIZES) for r in range(rows)]
    else:
        expected = [t for s, rows in enumerate(SIZES) for r in range(rows)
                    if (t := _text(s, r))]
    assert [doc for doc, _ in full] == expected == list(docs.iter_from(0))
    assert list(docs.iter_from(50)) == expected[50:]
    assert any(p[1] is not None for _, p in full)  # positions past a batch hold a state
    for i, (_, position) in enumerate(full):
        saved = json.loads(json.dumps(position))  # as a checkpoint keeps it
        resumed = list(docs.iter_positioned(saved))
        assert [doc for doc, _ in resumed] == expected[i + 1:], i
        # A resumed read's positions resume as well (a run resumed twice), though the state
        # datasets gives may spell the same point differently.
        for j in range(0, len(resumed), 11):
            again = docs.iter_positioned(json.loads(json.dumps(resumed[j][1])))
            assert [doc for doc, _ in again] == expected[i + 2 + j:], (i, j)


class OpenCounter:
    """Counts the opens of the folder's files through ``builtins.open``: what ``datasets``'
    streaming ``xopen`` calls for a local path (parquet, JSON lines and schema reads alike)."""

    def __init__(self, folder: Path, monkeypatch) -> None:
        self.folder, self.real, self.opened = str(folder), builtins.open, collections.Counter()
        monkeypatch.setattr(builtins, "open", self)

    def __call__(self, file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(self.folder):
            self.opened[int(os.path.basename(os.fspath(file))[6:11])] += 1
        return self.real(file, *args, **kwargs)


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "chat"])
def test_a_resume_opens_no_file_of_an_earlier_shard(tmp_path, kind, monkeypatch, capsys):
    folder = _folder(tmp_path, kind, sizes=[1500] * 5)  # batches of 1024 rows
    docs = _open(folder, records=kind == "chat")
    index, position = next((i, p) for i, (_, p) in enumerate(docs.iter_positioned(None))
                           if p[0] == 3 and p[1] is not None and p[2] == 100)  # past a batch
    rest = list(itertools.islice(docs.iter_from(index + 1), 5))
    counter = OpenCounter(folder, monkeypatch)
    resumed = list(itertools.islice(docs.iter_positioned(position), 5))
    at_resume = dict(counter.opened)
    counter.opened.clear()
    assert resumed and [doc for doc, _ in resumed] == rest
    next(docs.iter_from(index + 1))  # the same resume by index: every shard from the first
    by_index = dict(counter.opened)
    assert at_resume == {3: 1}
    assert by_index == {0: 1, 1: 1, 2: 1, 3: 1}
    with capsys.disabled():
        print(f"\n{kind}: file opens at a resume in shard 3: by position {at_resume}, "
              f"by index {by_index}")


def _pipeline(docs) -> StreamingTextPipeline:
    return StreamingTextPipeline(docs, ByteTokenizer(), seq_len=24, batch_size=3,
                                 shuffle_buffer_size=16, seed=4, epochs=2)


def test_the_pipeline_resumes_a_folder_stream_exactly(tmp_path, small_batches):
    docs = _open(_folder(tmp_path, "parquet"))
    full = [(b.inputs.tolist(), b.labels.tolist()) for b in _pipeline(docs)]
    k, batch = next((k, b) for k, b in enumerate(_pipeline(docs))  # saved by position, past
                    if (b.state.source_position or [0])[0] >= 1)  # the first shard
    batch.state.save(tmp_path / "state.json.gz")
    resumed = _pipeline(docs)
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert [(b.inputs.tolist(), b.labels.tolist()) for b in resumed] == full[k + 1:]


def test_a_packed_chat_pipeline_saves_its_position_and_resumes_exactly(tmp_path, small_batches):
    """Packed batches (chat) keep the stream position too: a resume seeks, it does not count the
    records again from the first shard."""
    from kerastrain.data.chat_template import ChatTemplate
    from kerastrain.data.formats import ChatFormat, FormatContext

    docs = _open(_folder(tmp_path, "chat"), records=True)
    template = ChatTemplate("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + ';' }}"
                            "{% endfor %}")
    context = FormatContext(tokenizer=ByteTokenizer(), template=template)

    def pipeline():
        return StreamingTextPipeline(docs, ByteTokenizer(), seq_len=32, batch_size=2,
                                     shuffle_buffer_size=4, seed=1, epochs=1,
                                     data_format=ChatFormat(), format_context=context,
                                     packed=True)

    full = [(b.inputs.tolist(), b.segments.tolist()) for b in pipeline()]
    k, batch = next((k, b) for k, b in enumerate(pipeline())
                    if b.state.source_position is not None)
    assert k < len(full) - 2
    batch.state.save(tmp_path / "state.json.gz")
    resumed = pipeline()
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert [(b.inputs.tolist(), b.segments.tolist()) for b in resumed] == full[k + 1:]


def _losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss"], r.get("trained_tokens")) for r in rows if r["kind"] == "train"]


def _saved_state(checkpoint: Path) -> PipelineState:
    files = sorted((checkpoint / "pipeline_states").glob("process_*.json.gz"))
    assert len(files) == 1, files
    return PipelineState.load(files[0])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "chat"])
def test_a_training_run_resumed_on_a_folder_stream_matches_an_uninterrupted_one(tmp_path, kind):
    folder = _folder(tmp_path, kind, sizes=[100] * 8)  # the pipeline takes 256 documents at once
    args = [*TINY, "--dataset-id", str(folder), "--streaming", "--max-train-examples", "2000",
            "--max-steps", "8",
            "--save-every", "4", "--log-every", "1", "--eval-every", "1000",
            "--shuffle-buffer-size", "8", "--dropout-rate", "0.1"]
    # Text: the text column's documents, empty and null rows dropped; chat: whole records.
    args += ["--seq-len", "128"] if kind == "chat" else ["--data-format", "text"]
    uninterrupted = tmp_path / "a"
    done = invoke("run", "--output-dir", str(uninterrupted), *args)
    assert done.exit_code == 0, done.output
    checkpoint = tmp_path / "copy" / "checkpoint_step_4"
    shutil.copytree(uninterrupted / "checkpoint_step_4", checkpoint)
    # The saved data position: the stream's own ([shard, ...] or the start), no record.
    state = _saved_state(checkpoint)
    assert state.source_position is None or isinstance(state.source_position, list)
    assert "What is" not in json.dumps(state.saved()) and "shard" not in json.dumps(state.saved())
    resumed = tmp_path / "b"
    result = invoke("run", "--output-dir", str(resumed), *args, "--resume-from", str(checkpoint))
    assert result.exit_code == 0, result.output
    assert "at step 4" in " ".join(result.output.split())
    expected, got = _losses(uninterrupted)[4:], _losses(resumed)
    assert len(got) == 4 and [t for _, t in got] == [t for _, t in expected]
    np.testing.assert_allclose([x for x, _ in got], [x for x, _ in expected], rtol=1e-6)
