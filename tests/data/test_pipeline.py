"""The just-in-time pipeline: packing, stride, epochs, and exact resume from a saved state."""

import hashlib

import numpy as np
import pytest

from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.prefetch import Prefetcher
from kerastrain.data.tokenizer import ByteTokenizer

DOCS = InMemoryDocuments([f"document {i} " + "word " * (i % 23) for i in range(300)])


def make(**kw):
    args = dict(seq_len=16, batch_size=4, shuffle_buffer_size=50, seed=1, epochs=2)
    args.update(kw)
    return StreamingTextPipeline(DOCS, ByteTokenizer(), **args)


def digest(batch):
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest()


def test_windows_are_shifted_by_one_and_separated_by_eos():
    batch = next(iter(make(shuffle_buffer_size=1)))
    assert batch.inputs.shape == (4, 16) and batch.labels.shape == (4, 16)
    np.testing.assert_array_equal(batch.inputs[:, 1:], batch.labels[:, :-1])
    text = ByteTokenizer().decode(batch.inputs[0].tolist())
    assert text.startswith("document 0")
    all_tokens = np.concatenate([b.inputs.ravel() for b in make(shuffle_buffer_size=1, epochs=1)])
    assert (all_tokens == ByteTokenizer.eos_id).sum() > 250  # an EOS after every document


def test_stride_overlaps_windows():
    batch = next(iter(make(shuffle_buffer_size=1, stride=8)))
    np.testing.assert_array_equal(batch.inputs[0, 8:], batch.inputs[1, :8])


def test_shuffling_changes_order_but_not_content():
    plain = sorted(digest(b) for b in make(shuffle_buffer_size=1, epochs=1, seq_len=512,
                                            batch_size=1))
    shuffled = [digest(b) for b in make(shuffle_buffer_size=50, epochs=1, seq_len=512,
                                        batch_size=1)]
    assert shuffled != plain
    assert len(shuffled) == len(plain)


def test_max_documents_and_epochs():
    one = list(make(max_documents=40, epochs=1))
    two = list(make(max_documents=40, epochs=2))
    assert len(two) >= 2 * len(one)
    assert [digest(b) for b in one] != [digest(b) for b in two[len(one):2 * len(one)]]


@pytest.mark.parametrize("buffer", [1, 50])
@pytest.mark.parametrize("stop_at", [1, 17, 60])
def test_resume_from_saved_state_replays_exactly(tmp_path, buffer, stop_at):
    full = [digest(b) for b in make(shuffle_buffer_size=buffer)]
    assert len(full) > 60
    first = make(shuffle_buffer_size=buffer)
    head = []
    for i, batch in enumerate(first):
        head.append(digest(batch))
        if i + 1 == stop_at:
            batch.state.save(tmp_path / "state.json.gz")
            break
    resumed = make(shuffle_buffer_size=buffer)
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert head + [digest(b) for b in resumed] == full


def test_prefetcher_reraises_worker_errors():
    def broken():
        yield 1
        raise ValueError("boom")

    it = Prefetcher(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="boom"):
        next(it)
