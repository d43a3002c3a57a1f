"""The Hugging Face source hands whole records to the data formats that read several columns
(``SourceRequest.records``), resumable from any index like its text documents."""

from __future__ import annotations

import json

import pytest

from kerastrain.sources import SourceRequest


@pytest.mark.parametrize("streaming", [True, False])
def test_records_are_whole_rows_and_resume_from_any_index(tmp_path, streaming):
    from kerastrain_hf.source import HFSource

    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}], "id": i} for i in range(7)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = HFSource().open(SourceRequest(location=str(path), streaming=streaming, records=True))
    assert list(docs.iter_from(0)) == rows
    assert list(docs.iter_from(4)) == rows[4:]


def test_a_streamed_chat_file_packs_every_epoch_alike(tmp_path):
    """Each epoch of a positioned stream starts at the file's first record again (an epoch once
    kept the last epoch's end position and every later epoch read nothing, forever)."""
    from kerastrain_hf.source import HFSource

    from kerastrain.data.chat_template import ChatTemplate
    from kerastrain.data.formats import ChatFormat, FormatContext
    from kerastrain.data.pipeline import StreamingTextPipeline
    from kerastrain.data.tokenizer import ByteTokenizer

    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}" * (i % 3 + 1)}]}
            for i in range(30)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = HFSource().open(SourceRequest(location=str(path), streaming=True, records=True))
    template = ChatTemplate("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + ';' }}"
                            "{% endfor %}{% if add_generation_prompt %}a:{% endif %}")
    context = FormatContext(tokenizer=ByteTokenizer(), template=template)

    def pipeline(epochs):
        return StreamingTextPipeline(docs, ByteTokenizer(), seq_len=32, batch_size=2,
                                     shuffle_buffer_size=1, epochs=epochs, data_format=ChatFormat(),
                                     format_context=context, packed=True, drop_remainder=False)

    one = pipeline(1)
    first = [b.labels.tolist() for b in one]
    three = pipeline(3)
    batches = [b.labels.tolist() for b in three]
    assert three.state.trained["examples"] == 3 * len(rows)
    assert one.state.trained["examples"] == len(rows)
    trained = [t for b in batches for row in b for t in row if t >= 0]
    assert trained == 3 * [t for b in first for row in b for t in row if t >= 0]
