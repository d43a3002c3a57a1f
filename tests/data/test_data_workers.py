"""``--data-workers N``: Grain's worker processes (``mp_prefetch``), each reading every N-th
document of the process's share; exact resume with the same N, errors raised as one worker
raises them, no worker left behind."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys

import psutil
import pytest

from kerastrain.data.chat_template import ChatTemplate
from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.formats import ChatFormat, FormatContext
from kerastrain.data.pipeline import PipelineState, StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.errors import DataError

TEXTS = [f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 53}" for j in range(5 + i % 40))
         for i in range(300)]
CHATS = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?" + " pad" * (i % 5)},
                       {"role": "assistant", "content": str(2 * i)}]} for i in range(150)]
TEMPLATE = ChatTemplate("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + ';' }}"
                        "{% endfor %}{% if add_generation_prompt %}a:{% endif %}")


@pytest.fixture(autouse=True)
def spawned():
    """The child processes started since the test began; at the end, none may be left."""
    before = {c.pid for c in psutil.Process().children()}

    def new_children() -> list:  # multiprocessing's resource tracker lives as long as we do
        return [c for c in psutil.Process().children() if c.pid not in before
                and "resource_tracker" not in " ".join(c.cmdline())]

    yield new_children
    gc.collect()
    psutil.wait_procs(new_children(), timeout=30)
    assert new_children() == []  # every test's workers are gone


def chat_pipeline(workers, records=CHATS, **kw):
    context = FormatContext(tokenizer=ByteTokenizer(), template=TEMPLATE)
    args = dict(seq_len=64, batch_size=3, shuffle_buffer_size=20, seed=3, epochs=2,
                drop_remainder=False, data_format=ChatFormat(), format_context=context, packed=True, workers=workers)
    return StreamingTextPipeline(InMemoryDocuments(records), ByteTokenizer(), **{**args, **kw})


def digests(pipeline) -> list:
    out = [(b.inputs.tobytes(), b.labels.tobytes(), b.segments.tobytes()) for b in pipeline]
    pipeline.close()
    return out


def test_packed_chat_with_2_workers_trains_every_example_and_resumes_exactly(tmp_path):
    batches = list(chat_pipeline(2))
    assert batches[-1].state.trained == list(chat_pipeline(1))[-1].state.trained  # the same data
    full = [(b.inputs.tobytes(), b.labels.tobytes(), b.segments.tobytes()) for b in batches]
    batches[9].state.save(tmp_path / "state.json.gz")
    resumed = chat_pipeline(2)
    resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
    assert digests(resumed) == full[10:]


def test_a_bad_record_in_a_worker_raises_the_error_one_worker_raises():
    records = [*CHATS[:100], {"messages": [{"role": "wizard", "content": "hi"}]}, *CHATS[100:]]
    errors = []
    for workers in (1, 2):
        pipeline = chat_pipeline(workers, records, shuffle_buffer_size=1)
        with pytest.raises(DataError) as caught:
            list(pipeline)
        pipeline.close()
        errors.append(str(caught.value))
    assert errors[0] == errors[1] == ("unknown role 'wizard' in a conversation; roles: assistant, "
                                      "system, tool, user")


def test_a_tokenizer_that_cannot_be_pickled_is_a_one_line_refusal():
    from kerastrain.errors import ConfigError

    class LocalBytes(ByteTokenizer):  # a local class: pickle cannot name it
        pass

    pipeline = chat_pipeline(2)
    pipeline.tokenizer = LocalBytes()
    with pytest.raises(ConfigError, match="cannot be pickled.*use --data-workers 1$"):
        next(iter(pipeline))


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    script = (
        "import sys, psutil\n"
        "from kerastrain.data.corpus import InMemoryDocuments\n"
        "from kerastrain.data.pipeline import StreamingTextPipeline\n"
        "from kerastrain.data.tokenizer import ByteTokenizer\n"
        "if __name__ == '__main__':\n"
        f"    p = StreamingTextPipeline(InMemoryDocuments({TEXTS!r}), ByteTokenizer(),\n"
        "        seq_len=32, batch_size=4, workers=2, epochs=None)\n"
        "    batches = iter(p); next(batches)\n"
        "    print(*[c.pid for c in psutil.Process().children(recursive=True)], flush=True)\n"
        "    for _ in batches: pass\n")
    (tmp_path / "trainer.py").write_text(script)
    trainer = subprocess.Popen([sys.executable, str(tmp_path / "trainer.py")],
                               stdout=subprocess.PIPE, text=True)
    workers = [psutil.Process(int(pid)) for pid in trainer.stdout.readline().split()]
    workers = [w for w in workers if "resource_tracker" not in " ".join(w.cmdline())]
    assert len(workers) == 2
    os.kill(trainer.pid, signal.SIGKILL)  # as kill -9 of a training run
    trainer.wait()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == []
