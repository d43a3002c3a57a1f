"""Tokenizer worker processes (``--data-workers``): the same batches and saved states for any
number of workers, errors raised as one worker would raise them, and no process left behind."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

import kerastrain.data.chunks as chunks_module
from kerastrain.data.chat_template import ChatTemplate
from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.formats import ChatFormat, FormatContext
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenize_workers import split
from kerastrain.data.tokenizer import BPEKind, ByteTokenizer
from kerastrain.errors import DataError

TEXTS = [f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 53}" for j in range(5 + i % 40))
         for i in range(300)]
CHATS = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?" + " pad" * (i % 5)},
                       {"role": "assistant", "content": str(2 * i)}]} for i in range(150)]
TEMPLATE = ChatTemplate("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + ';' }}"
                        "{% endfor %}{% if add_generation_prompt %}a:{% endif %}")


@pytest.fixture(scope="module")
def bpe():
    return BPEKind().train(TEXTS, 400)  # a real HF tokenizer: it travels to the workers


@pytest.fixture(autouse=True)
def spawned(monkeypatch):
    """The child processes started since the test began (a pytest-xdist worker may hold a
    storage server started by another test); at the end, none may be left."""
    monkeypatch.setattr(chunks_module, "ENCODE_CHUNK_DOCS", 37)  # many chunks, many pieces
    before = {c.pid for c in psutil.Process().children()}

    def new_children() -> list:
        return [c for c in psutil.Process().children() if c.pid not in before]

    yield new_children
    gc.collect()
    assert new_children() == []  # every test's workers are gone


def text_pipeline(tokenizer, workers, **kw):
    args = dict(seq_len=32, batch_size=4, shuffle_buffer_size=50, seed=7, epochs=2,
                window_shuffle_size=16, workers=workers)
    return StreamingTextPipeline(InMemoryDocuments(TEXTS), tokenizer, **{**args, **kw})


def chat_pipeline(workers, records=CHATS, **kw):
    context = FormatContext(tokenizer=ByteTokenizer(), template=TEMPLATE)
    args = dict(seq_len=64, batch_size=3, shuffle_buffer_size=20, seed=3, epochs=2,
                data_format=ChatFormat(), format_context=context, packed=True, workers=workers)
    return StreamingTextPipeline(InMemoryDocuments(records), ByteTokenizer(), **{**args, **kw})


def run(pipeline) -> list:
    """Each batch's arrays and its saved state (as a checkpoint writes it)."""
    out = [(b.inputs.tolist(), b.labels.tolist(),
            None if b.segments is None else b.segments.tolist(),
            json.dumps(b.state.saved(), default=lambda o: o.tolist()))
           for b in pipeline]
    pipeline.close()
    return out


def test_plain_text_batches_and_states_are_the_same_for_1_2_and_3_workers(bpe, tmp_path):
    one = run(text_pipeline(bpe, 1))
    assert len(one) > 40
    assert run(text_pipeline(bpe, 2)) == one
    three = text_pipeline(bpe, 3)
    batches = list(three)
    three.close()
    batches[17].state.save(tmp_path / "state.json.gz")  # saved with 3 workers, resumed with 2
    resumed = text_pipeline(bpe, 2)
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert run(resumed) == one[18:]


def test_an_abandoned_iteration_and_a_close_mid_run_change_no_batch(bpe):
    """Chunks are handed to the workers ahead of the packing: a pipeline iterated again after
    stopping early skips the answers to what it had handed out, and one closed mid-run encodes
    what the workers held here."""
    pipeline = text_pipeline(bpe, 2)
    first = iter(pipeline)
    head = [next(first) for _ in range(7)]
    del first  # stopped with chunks still at the workers
    pipeline.restore(head[-1].state)
    again = iter(pipeline)
    rest = [next(again) for _ in range(5)]
    pipeline.close()  # the workers exit with a chunk handed out; the rest is encoded here
    rest += list(again)

    def seen(batches):  # every buffered text: a restored pipeline re-learns what it could
        return [(b.inputs.tolist(), b.labels.tolist(),
                 json.dumps({**b.state.__dict__, "reread_from": None}, default=lambda o: o.tolist()))
                for b in batches]

    assert seen(head + rest) == seen(text_pipeline(bpe, 1))


def test_chat_batches_and_states_are_the_same_for_1_2_and_3_workers():
    one = run(chat_pipeline(1))
    assert len(one) > 20
    assert run(chat_pipeline(2)) == one
    assert run(chat_pipeline(3)) == one


def test_a_tokenizer_that_cannot_be_pickled_is_encoded_by_threads_alike():
    class LocalBytes(ByteTokenizer):  # a local class: pickle cannot name it
        pass

    assert run(text_pipeline(LocalBytes(), 3)) == run(text_pipeline(ByteTokenizer(), 1))


def test_a_bad_record_in_a_worker_raises_the_error_one_worker_raises():
    records = [*CHATS[:100], {"messages": [{"role": "wizard", "content": "hi"}]}, *CHATS[100:]]
    errors = []
    for workers in (1, 3):
        pipeline = chat_pipeline(workers, records, shuffle_buffer_size=1)
        with pytest.raises(DataError) as caught:
            list(pipeline)
        pipeline.close()
        errors.append(str(caught.value))
    assert errors[0] == errors[1] == ("unknown role 'wizard' in a conversation; roles: assistant, "
                                      "system, tool, user")


def test_a_worker_killed_mid_run_is_a_one_line_error(bpe, spawned):
    pipeline = text_pipeline(bpe, 2)
    batches = iter(pipeline)
    next(batches)
    (worker,) = spawned()
    worker.send_signal(signal.SIGKILL)  # not reaped here: the pipeline reads its exit code
    with pytest.raises(DataError, match=r"^a tokenizer worker \(--data-workers\) exited with code "
                                        r"-9$"):
        list(batches)
    pipeline.close()


def test_workers_exit_when_the_pipeline_is_dropped_or_its_process_is_killed(bpe, tmp_path,
                                                                           spawned):
    pipeline = text_pipeline(bpe, 3)
    next(iter(pipeline))
    assert len(spawned()) == 2
    del pipeline  # not closed: garbage collection ends the workers (the fixture checks)
    gc.collect()
    assert spawned() == []

    bpe.save(tmp_path / "tokenizer.json")
    script = (
        "import sys, psutil\n"
        "from kerastrain.data.corpus import InMemoryDocuments\n"
        "from kerastrain.data.pipeline import StreamingTextPipeline\n"
        "from kerastrain.data.tokenizer import load_tokenizer\n"
        f"p = StreamingTextPipeline(InMemoryDocuments({TEXTS!r}), load_tokenizer(sys.argv[1]),\n"
        "    seq_len=32, batch_size=4, workers=3, epochs=None)\n"
        "batches = iter(p); next(batches)\n"
        "print(*[c.pid for c in psutil.Process().children()], flush=True)\n"
        "for _ in batches: pass\n")
    trainer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "tokenizer.json")],
                               stdout=subprocess.PIPE, text=True)
    workers = [psutil.Process(int(pid)) for pid in trainer.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(trainer.pid, signal.SIGKILL)  # as kill -9 of a training run
    trainer.wait()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == []


def test_pieces_of_a_chunk_put_together_are_the_chunk_in_the_shares_asked():
    chunk = ["a" * n for n in (1, 50, 3, 3, 90, 2, 2, 2, 40, 7)]
    for weights in ([1], [1, 1], [1, 1, 1], [3, 1], [1, 5, 1, 1], [1] * 12):
        pieces = split(chunk, weights)
        assert len(pieces) == len(weights)
        assert [d for piece in pieces for d in piece] == chunk
    assert [sum(map(len, p)) for p in split(chunk, [1, 1])] == [57, 143]  # the nearest cut
    assert [sum(map(len, p)) for p in split(chunk, [1, 3])] == [51, 149]
    assert [sum(map(len, p)) for p in split(chunk, [3, 1])] == [151, 49]
    assert split([], [1, 1]) == [[], []]
