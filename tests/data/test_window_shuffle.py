"""The row shuffle (data.window_shuffle): batches mix documents, nothing is lost, resume
stays exact."""

import hashlib
import re

import numpy as np
import pytest

from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer

# Long documents (~20 windows of 16 tokens each): without window shuffling a batch of 4
# consecutive windows comes from one document.
LONG = InMemoryDocuments([f"<{i:02d}>" + f" book{i:02d}" * 50 for i in range(24)])


def make(**kw):
    args = dict(seq_len=16, batch_size=4, shuffle_buffer_size=8, seed=3, epochs=2,
                window_shuffle_size=64)
    args.update(kw)
    return StreamingTextPipeline(LONG, ByteTokenizer(), **args)


def digest(batch):
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest()


def books_in(batch) -> int:
    text = [ByteTokenizer().decode(row.tolist()) for row in batch.inputs]
    return len({m for row in text for m in re.findall(r"book(\d\d)", row)})


def test_batches_draw_from_many_documents():
    plain = list(make(window_shuffle_size=0, epochs=1))
    mixed = list(make(epochs=1))
    assert np.mean([books_in(b) for b in plain]) < 1.3
    # windows of 64 rows: ~3 books of ~28 rows each
    assert np.mean([books_in(b) for b in mixed]) > 2.0


def test_same_windows_only_reordered():
    rows = lambda p: sorted(r.tobytes() for b in p for r in np.concatenate(  # noqa: E731
        [b.inputs, b.labels[:, -1:]], axis=1))
    plain = rows(make(window_shuffle_size=0, epochs=1, drop_remainder=False))
    mixed = rows(make(epochs=1, drop_remainder=False))
    assert plain == mixed


@pytest.mark.parametrize("stop_at", [1, 9, 40])
def test_resume_from_saved_state_replays_exactly(tmp_path, stop_at):
    full = [digest(b) for b in make()]
    assert len(full) > 40
    head = []
    for i, batch in enumerate(make()):
        head.append(digest(batch))
        if i + 1 == stop_at:
            batch.state.save(tmp_path / "state.json.gz")
            break
    resumed = make()
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert head + [digest(b) for b in resumed] == full


def test_2_workers_resume_exactly_from_their_own_state(tmp_path):
    full = [digest(b) for b in make(workers=2)]
    batches = list(make(workers=2))
    assert [digest(b) for b in batches] == full  # deterministic
    batches[20].state.save(tmp_path / "state.json.gz")
    resumed = make(workers=2)
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert [digest(b) for b in resumed] == full[21:]
    # Every book, as one worker reads them (each worker reads every 2nd book).
    books = lambda p: {m for b in p for row in b.inputs  # noqa: E731
                       for m in re.findall(r"book(\d\d)", ByteTokenizer().decode(row.tolist()))}
    assert books(make(workers=2, epochs=1)) == books(make(workers=1, epochs=1)) == {
        f"{i:02d}" for i in range(24)}


@pytest.mark.parametrize("size", [1, 5, 16, 53, 100])
def test_window_shuffle_resumes_at_every_element_and_keeps_epochs_apart(size):
    import grain

    from kerastrain.data.window_shuffle import WindowShuffle

    elements = grain.MapDataset.range(53).map(lambda i: {"i": i, "epoch": i // 20})
    ds = WindowShuffle(elements.to_iter_dataset(), size=size, seed=3)
    full = [e["i"] for e in ds]
    assert sorted(full) == list(range(53))
    assert (full != list(range(53))) == (size > 1)
    assert [i // 20 for i in full] == sorted(i // 20 for i in full)  # epoch by epoch
    for k in range(54):
        it = iter(ds)
        for _ in range(k):
            next(it)
        again = iter(ds)
        again.set_state(it.get_state())
        assert [e["i"] for e in again] == full[k:]


def test_a_buffer_larger_than_an_epoch_keeps_epochs_apart():
    """10,000 documents of shuffle buffer over 2,000 a epoch once put epoch 4 in the first
    batch."""
    docs = InMemoryDocuments([f"<{i:03d}> " + "x" * 40 for i in range(100)])
    pipeline = StreamingTextPipeline(docs, ByteTokenizer(), seq_len=16, batch_size=4,
                                     shuffle_buffer_size=1000, window_shuffle_size=64, seed=3,
                                     epochs=3, max_documents=30)
    epochs = [b.state.epoch for b in pipeline]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == 2
